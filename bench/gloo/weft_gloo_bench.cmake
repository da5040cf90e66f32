# weft-gloo-bench: the Gloo side of `weft-bench --compare gloo`, built only when CMake finds Gloo
# (Debian: libgloo-dev, which ships /usr/share/cmake/Gloo/GlooConfig.cmake and the shared libgloo
# with its TCP transport). Written against Gloo only (no weft; the reference data is weft-bench's
# bench/weft_bench_data.cc), placed beside weft-bench, where weft-bench looks for it.
# WEFT_GLOO=OFF leaves it out even when Gloo is installed.
option(WEFT_GLOO "Build weft-gloo-bench (weft-bench --compare gloo) when Gloo is found" ON)
if(WEFT_GLOO)
  find_package(Gloo CONFIG QUIET)
endif()
if(WEFT_GLOO AND TARGET gloo)
  add_executable(weft-gloo-bench
    ${CMAKE_CURRENT_LIST_DIR}/weft_gloo_bench.cc
    ${CMAKE_CURRENT_LIST_DIR}/../weft_bench_data.cc)
  target_include_directories(weft-gloo-bench PRIVATE ${CMAKE_CURRENT_LIST_DIR}/.. ${GLOO_INCLUDE_DIRS}
                             ${PROJECT_SOURCE_DIR}/include)
  target_link_libraries(weft-gloo-bench PRIVATE gloo)
  weft_warnings(weft-gloo-bench)
  # Building weft-bench builds its helper too.
  add_dependencies(weft-bench weft-gloo-bench)
  install(TARGETS weft-gloo-bench RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  message(STATUS "weft-bench --compare gloo: building weft-gloo-bench with Gloo ${GLOO_VERSION}")
else()
  message(STATUS "weft-bench --compare gloo: Gloo not found (or WEFT_GLOO=OFF), weft-gloo-bench not "
                 "built (Debian: apt-get install libgloo-dev)")
endif()
