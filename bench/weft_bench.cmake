# weft-bench: the nccl-tests-compatible benchmark. Public API only: it links the shared library
# `weft` (never weft_internal), so it measures exactly what users get.
add_executable(weft-bench
  ${CMAKE_CURRENT_LIST_DIR}/weft_bench.cc
  ${CMAKE_CURRENT_LIST_DIR}/weft_bench_data.cc)
target_link_libraries(weft-bench PRIVATE weft)
weft_warnings(weft-bench)
# Installed next to libweft: find it through the RPATH relative to bin/.
set_target_properties(weft-bench PROPERTIES
  INSTALL_RPATH "$ORIGIN/../${CMAKE_INSTALL_LIBDIR}")
install(TARGETS weft-bench RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
# The MPI helper of `weft-bench --compare mpi` (only when MPI is found).
include(${CMAKE_CURRENT_LIST_DIR}/mpi/weft_mpi_bench.cmake)
# The Gloo helper of `weft-bench --compare gloo` (only when Gloo is found).
include(${CMAKE_CURRENT_LIST_DIR}/gloo/weft_gloo_bench.cmake)
