#include "lib/topo/hca_filter.h"

#include <gtest/gtest.h>

namespace weft::topo {
namespace {

TEST(HcaFilter, EmptyAcceptsEverything) {
  HcaFilter f;
  ASSERT_TRUE(HcaFilter::parse("", &f));
  EXPECT_TRUE(f.empty());
  EXPECT_TRUE(f.accepts("mlx5_0", 1));
  ASSERT_TRUE(HcaFilter::parse("   ", &f));
  EXPECT_TRUE(f.empty());
}

TEST(HcaFilter, PrefixMatchByDefault) {
  HcaFilter f;
  ASSERT_TRUE(HcaFilter::parse("mlx5_1", &f));
  EXPECT_FALSE(f.excludeMode());
  EXPECT_FALSE(f.exactMatch());
  EXPECT_TRUE(f.accepts("mlx5_1", 1));
  EXPECT_TRUE(f.accepts("mlx5_10", 1));  // NCCL semantics: prefix
  EXPECT_TRUE(f.accepts("mlx5_11", 2));
  EXPECT_FALSE(f.accepts("mlx5_2", 1));
}

TEST(HcaFilter, ExactMatch) {
  HcaFilter f;
  ASSERT_TRUE(HcaFilter::parse("=mlx5_1,mlx5_3", &f));
  EXPECT_TRUE(f.exactMatch());
  ASSERT_EQ(f.entries().size(), 2u);
  EXPECT_TRUE(f.accepts("mlx5_1", 1));
  EXPECT_FALSE(f.accepts("mlx5_10", 1));
  EXPECT_TRUE(f.accepts("mlx5_3", 1));
}

TEST(HcaFilter, PortsRestrictTheMatch) {
  HcaFilter f;
  ASSERT_TRUE(HcaFilter::parse("mlx5_0:1,mlx5_1:2", &f));
  EXPECT_TRUE(f.accepts("mlx5_0", 1));
  EXPECT_FALSE(f.accepts("mlx5_0", 2));
  EXPECT_FALSE(f.accepts("mlx5_1", 1));
  EXPECT_TRUE(f.accepts("mlx5_1", 2));
  EXPECT_EQ(f.entries()[0].port, 1);
  EXPECT_EQ(f.entries()[1].port, 2);
}

TEST(HcaFilter, ExcludeAndExactExclude) {
  HcaFilter f;
  ASSERT_TRUE(HcaFilter::parse("^mlx5_0", &f));
  EXPECT_TRUE(f.excludeMode());
  EXPECT_FALSE(f.accepts("mlx5_0", 1));
  EXPECT_TRUE(f.accepts("mlx5_1", 1));
  ASSERT_TRUE(HcaFilter::parse("^=mlx5_1:1", &f));
  EXPECT_TRUE(f.excludeMode());
  EXPECT_TRUE(f.exactMatch());
  EXPECT_FALSE(f.accepts("mlx5_1", 1));
  EXPECT_TRUE(f.accepts("mlx5_1", 2));
  EXPECT_TRUE(f.accepts("mlx5_10", 1));
}

TEST(HcaFilter, WhitespaceAndTrailingComma) {
  HcaFilter f;
  ASSERT_TRUE(HcaFilter::parse(" mlx5_0 , mlx5_2:1 ,", &f));
  ASSERT_EQ(f.entries().size(), 2u);
  EXPECT_EQ(f.entries()[0].name, "mlx5_0");
  EXPECT_EQ(f.entries()[1].name, "mlx5_2");
}

TEST(HcaFilter, MalformedSpecsAreErrorsThatNameTheVariable) {
  for (const char* bad : {"^", "=", "^=", ",mlx5_0", "mlx5_0,,mlx5_1", ":1", "mlx5_0:", "mlx5_0:x",
                          "mlx5_0:0", "mlx5_0:1:2", "mlx5_0:-1", "mlx5_0,^mlx5_1", "ml x5"}) {
    HcaFilter f;
    Status s = HcaFilter::parse(bad, &f);
    EXPECT_FALSE(s) << bad;
    EXPECT_NE(s.message().find("WEFT_IB_HCA"), std::string::npos) << s.message();
    EXPECT_EQ(s.code(), Code::kInvalidArgument);
  }
}

}  // namespace
}  // namespace weft::topo
