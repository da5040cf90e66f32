# weft-topo: show the node topology (and, later, plans) from the command line.
add_executable(weft-topo ${CMAKE_CURRENT_SOURCE_DIR}/weft_topo.cc)
target_link_libraries(weft-topo PRIVATE weft_internal)
weft_warnings(weft-topo)
install(TARGETS weft-topo RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# plan_bench: Google Benchmark of building the collective plan up to 65,536 ranks (time, and the
# plan's bytes per rank). Not installed. Here because bench/CMakeLists.txt includes only
# weft_bench/weft_topo/micro.
find_package(benchmark REQUIRED)
add_executable(plan_bench ${CMAKE_CURRENT_SOURCE_DIR}/plan_bench.cc)
target_link_libraries(plan_bench PRIVATE benchmark::benchmark weft_internal)
weft_warnings(plan_bench)
