#pragma once
// The library version code, NCCL-style (X*10000 + Y*100 + Z); lib/api checks it equals WEFT_VERSION_CODE.
namespace weft {
inline constexpr int kLibraryVersion = 0 * 10000 + 1 * 100 + 0;
}
