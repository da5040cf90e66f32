# weft-topo: show the node topology (and, later, plans) from the command line.
add_executable(weft-topo ${CMAKE_CURRENT_SOURCE_DIR}/weft_topo.cc)
target_link_libraries(weft-topo PRIVATE weft_internal)
weft_warnings(weft-topo)
install(TARGETS weft-topo RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
