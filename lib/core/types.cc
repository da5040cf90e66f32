#include "lib/core/types.h"

#include <cstring>

namespace weft {

namespace {
const char* const kTypeNames[kNumDataTypes] = {"int8",  "uint8", "int32",  "uint32",   "int64",  "uint64",
                                               "half",  "float", "double", "bfloat16", "f8e4m3", "f8e5m2"};
const char* const kOpNames[kNumRedOps] = {"sum", "prod", "max", "min", "avg"};
}  // namespace

const char* typeName(DataType t) {
  int i = static_cast<int>(t);
  return i >= 0 && i < kNumDataTypes ? kTypeNames[i] : "?";
}

const char* opName(RedOp op) {
  int i = static_cast<int>(op);
  return i >= 0 && i < kNumRedOps ? kOpNames[i] : "?";
}

bool parseTypeName(const char* s, DataType* out) {
  for (int i = 0; i < kNumDataTypes; ++i)
    if (std::strcmp(s, kTypeNames[i]) == 0) {
      *out = static_cast<DataType>(i);
      return true;
    }
  return false;
}

bool parseOpName(const char* s, RedOp* out) {
  for (int i = 0; i < kNumRedOps; ++i)
    if (std::strcmp(s, kOpNames[i]) == 0) {
      *out = static_cast<RedOp>(i);
      return true;
    }
  return false;
}

const char* collName(CollType c) {
  switch (c) {
    case CollType::kAllReduce: return "all-reduce";
    case CollType::kBroadcast: return "broadcast";
    case CollType::kReduce: return "reduce";
    case CollType::kAllGather: return "all-gather";
    case CollType::kReduceScatter: return "reduce-scatter";
    case CollType::kAlltoAll: return "all-to-all";
    case CollType::kSend: return "send";
    case CollType::kRecv: return "recv";
    case CollType::kBarrier: return "barrier";
  }
  return "?";
}

}  // namespace weft
