# The GPU bundle. `device-bundle` (any build) configures and builds build-device/ (Release,
# CMAKE_CUDA_ARCHITECTURES=90, WEFT_BUNDLE=ON) and fills build-device/bundle/ (git-ignored) with the
# stripped GPU binaries, libweft and the shared libraries they need that a bare CUDA machine may
# lack (hwloc, udev); CUDA's runtime and libstdc++ are linked statically, the driver never is.
# tests/gpu/device-check.sh runs the bundle on a GPU machine (and builds it, dry, where none is).
option(WEFT_BUNDLE "Build for the GPU bundle (static libstdc++, RPATH \$ORIGIN/../lib)" OFF)
set(WEFT_DEVICE_BUILD_DIR ${PROJECT_SOURCE_DIR}/build-device)
add_custom_target(device-bundle
  COMMAND ${CMAKE_COMMAND} -S ${PROJECT_SOURCE_DIR} -B ${WEFT_DEVICE_BUILD_DIR} -DCMAKE_BUILD_TYPE=Release
          -DWEFT_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DWEFT_BUNDLE=ON -DWEFT_BUILD_EXAMPLES=OFF -DWEFT_BUILD_BENCH=ON
  COMMAND ${CMAKE_COMMAND} --build ${WEFT_DEVICE_BUILD_DIR} --target weft-device-bundle-files -j2
  USES_TERMINAL VERBATIM)
# weft-bench (bench/weft_bench.cmake: with CUDA, --device) is in it too: the all-reduce benchmark.
if(WEFT_BUNDLE AND WEFT_HAVE_CUDA AND TARGET weft-device-test AND TARGET weft-bench)
  set_target_properties(weft PROPERTIES BUILD_RPATH "$ORIGIN")
  target_link_options(weft PRIVATE -static-libstdc++ -static-libgcc)
  add_custom_target(weft-device-bundle-files
    COMMAND ${PROJECT_SOURCE_DIR}/tests/gpu/make-bundle.sh ${PROJECT_BINARY_DIR}/bundle
            $<TARGET_FILE:weft-device-test> $<TARGET_FILE:weft-device-coll-test> $<TARGET_FILE:weft-device-kernel-test>
            $<TARGET_FILE:weft-device-bench> $<TARGET_FILE:weft-bench>
    DEPENDS weft weft-device-test weft-device-coll-test weft-device-kernel-test weft-device-bench weft-bench
    VERBATIM)
endif()
