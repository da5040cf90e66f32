# weft-mpi-bench: the MPI side of `weft-bench --compare mpi`, built only when CMake finds an MPI C
# library (Debian: openmpi-bin libopenmpi-dev). Written against MPI only (no weft), placed beside
# weft-bench (same build directory, same install bin/), where weft-bench looks for it.
find_package(MPI COMPONENTS C QUIET)
if(MPI_C_FOUND)
  add_executable(weft-mpi-bench ${CMAKE_CURRENT_LIST_DIR}/weft_mpi_bench.c)
  target_link_libraries(weft-mpi-bench PRIVATE MPI::MPI_C)
  set_target_properties(weft-mpi-bench PROPERTIES C_STANDARD 99 C_STANDARD_REQUIRED ON)
  target_compile_options(weft-mpi-bench PRIVATE -Wall -Wextra)
  # Building weft-bench builds its helper too.
  add_dependencies(weft-bench weft-mpi-bench)
  install(TARGETS weft-mpi-bench RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  message(STATUS "weft-bench --compare mpi: building weft-mpi-bench with MPI ${MPI_C_VERSION}")
else()
  message(STATUS "weft-bench --compare mpi: no MPI C library found, weft-mpi-bench not built "
                 "(Debian: apt-get install openmpi-bin libopenmpi-dev)")
endif()
