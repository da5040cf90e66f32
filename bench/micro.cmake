# micro_reduce: Google Benchmark of the CPU reduction kernels, every ISA level this CPU supports,
# as bytes read + written per second beside memcpy counted the same way. Not installed.
find_package(benchmark REQUIRED)
add_executable(micro_reduce ${CMAKE_CURRENT_SOURCE_DIR}/micro_reduce.cc)
target_link_libraries(micro_reduce PRIVATE benchmark::benchmark weft_internal)
weft_warnings(micro_reduce)
