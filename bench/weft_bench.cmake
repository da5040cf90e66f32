# weft-bench: the nccl-tests-compatible benchmark. Public API only: it links the shared library
# `weft` (never weft_internal), so it measures exactly what users get.
# --device (buffers on the GPU) is weft_bench_cuda.cc: with CUDA it links the CUDA runtime
# statically (libweft has its own copy; neither needs libcudart at run time, and a host-only run
# never loads the driver); without CUDA the same file says "built without CUDA".
add_executable(weft-bench
  ${CMAKE_CURRENT_LIST_DIR}/weft_bench.cc
  ${CMAKE_CURRENT_LIST_DIR}/weft_bench_data.cc
  ${CMAKE_CURRENT_LIST_DIR}/weft_bench_cuda.cc)
target_link_libraries(weft-bench PRIVATE weft)
if(WEFT_HAVE_CUDA)
  target_compile_definitions(weft-bench PRIVATE WEFT_BENCH_CUDA=1)
  target_link_libraries(weft-bench PRIVATE CUDA::cudart_static)
endif()
weft_warnings(weft-bench)
# Installed next to libweft: find it through the RPATH relative to bin/.
set_target_properties(weft-bench PROPERTIES
  INSTALL_RPATH "$ORIGIN/../${CMAKE_INSTALL_LIBDIR}")
if(WEFT_BUNDLE)
  # In the GPU bundle (cmake/DeviceBundle.cmake) beside the GPU test binaries: libweft from ../lib.
  set_target_properties(weft-bench PROPERTIES BUILD_RPATH "$ORIGIN/../lib")
  target_link_options(weft-bench PRIVATE -static-libstdc++ -static-libgcc)
endif()
install(TARGETS weft-bench RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
# The MPI helper of `weft-bench --compare mpi` (only when MPI is found).
include(${CMAKE_CURRENT_LIST_DIR}/mpi/weft_mpi_bench.cmake)
# The Gloo helper of `weft-bench --compare gloo` (only when Gloo is found).
include(${CMAKE_CURRENT_LIST_DIR}/gloo/weft_gloo_bench.cmake)
