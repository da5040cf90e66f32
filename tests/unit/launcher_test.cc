// Every launcher path of weftCommInitFromEnv, with fake environments.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstring>

#include "lib/bootstrap/launcher.h"

namespace weft::bootstrap {
namespace {

const char* const kAll[] = {"WEFT_RANK", "WEFT_NRANKS", "WEFT_LOCAL_RANK", "WEFT_COMM_ID", "WEFT_COMM_SECRET",
                            "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
                            "OMPI_MCA_ess_base_jobid", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_JOB_ID",
                            "SLURM_STEP_NODELIST", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                            "TORCHELASTIC_RUN_ID"};

class Launcher : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* v : kAll) unsetenv(v);
  }
  void TearDown() override { SetUp(); }
};

TEST_F(Launcher, WeftVariablesWinOverEveryLauncher) {
  setenv("WEFT_RANK", "2", 1);
  setenv("WEFT_NRANKS", "4", 1);
  setenv("WEFT_LOCAL_RANK", "1", 1);
  setenv("WEFT_COMM_ID", "127.0.0.1:5555", 1);
  setenv("OMPI_COMM_WORLD_RANK", "0", 1);
  setenv("OMPI_COMM_WORLD_SIZE", "8", 1);
  setenv("WEFT_COMM_SECRET", "abc", 1);
  LaunchInfo a;
  ASSERT_TRUE(launchInfoFromEnv(&a).isOk());
  EXPECT_EQ(a.rank, 2);
  EXPECT_EQ(a.nranks, 4);
  EXPECT_EQ(a.localRank, 1);
  EXPECT_EQ(a.launcher, "WEFT_*");
  EXPECT_EQ(a.root.str(), "127.0.0.1:5555");
  EXPECT_EQ(a.secretSource, "WEFT_COMM_SECRET");
  setenv("WEFT_COMM_SECRET", "abd", 1);
  LaunchInfo b;
  ASSERT_TRUE(launchInfoFromEnv(&b).isOk());
  EXPECT_NE(0, std::memcmp(a.secret, b.secret, kSecretBytes)) << "different secrets must give different ids";
}

TEST_F(Launcher, OpenMpi) {
  setenv("OMPI_COMM_WORLD_RANK", "3", 1);
  setenv("OMPI_COMM_WORLD_SIZE", "8", 1);
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "3", 1);
  setenv("OMPI_MCA_ess_base_jobid", "12345", 1);
  setenv("WEFT_COMM_ID", "localhost:7000", 1);
  LaunchInfo i;
  ASSERT_TRUE(launchInfoFromEnv(&i).isOk());
  EXPECT_EQ(i.launcher, "Open MPI");
  EXPECT_EQ(i.rank, 3);
  EXPECT_EQ(i.nranks, 8);
  EXPECT_EQ(i.localRank, 3);
  EXPECT_EQ(i.secretSource, "OMPI_MCA_ess_base_jobid");
  EXPECT_EQ(i.root.port(), 7000);
}

TEST_F(Launcher, SlurmWithNodeList) {
  setenv("SLURM_PROCID", "5", 1);
  setenv("SLURM_NTASKS", "16", 1);
  setenv("SLURM_LOCALID", "1", 1);
  setenv("SLURM_JOB_ID", "4242", 1);
  setenv("SLURM_STEP_NODELIST", "localhost", 1);
  LaunchInfo i;
  ASSERT_TRUE(launchInfoFromEnv(&i).isOk());
  EXPECT_EQ(i.launcher, "Slurm");
  EXPECT_EQ(i.rank, 5);
  EXPECT_EQ(i.root.port(), 20000 + 4242);
  EXPECT_EQ(i.rootSource, "SLURM_STEP_NODELIST");
  EXPECT_EQ(i.secretSource, "SLURM_JOB_ID");
  EXPECT_EQ(firstSlurmHost("gpu[003-010,012],cpu7"), "gpu003");
  EXPECT_EQ(firstSlurmHost("a,b"), "a");
  EXPECT_EQ(firstSlurmHost("node[1,3]"), "node1");
}

TEST_F(Launcher, TorchrunUsesMasterPortPlusOne) {
  setenv("RANK", "1", 1);
  setenv("WORLD_SIZE", "2", 1);
  setenv("LOCAL_RANK", "1", 1);
  setenv("MASTER_ADDR", "127.0.0.1", 1);
  setenv("MASTER_PORT", "29500", 1);
  setenv("TORCHELASTIC_RUN_ID", "run-7", 1);
  LaunchInfo i;
  ASSERT_TRUE(launchInfoFromEnv(&i).isOk());
  EXPECT_EQ(i.launcher, "torchrun");
  EXPECT_EQ(i.root.str(), "127.0.0.1:29501");
  EXPECT_EQ(i.secretSource, "TORCHELASTIC_RUN_ID");
}

TEST_F(Launcher, ErrorsNameTheVariable) {
  LaunchInfo i;
  Status s = launchInfoFromEnv(&i);
  EXPECT_FALSE(s.isOk());
  EXPECT_NE(s.message().find("WEFT_RANK"), std::string::npos);
  setenv("WEFT_RANK", "4", 1);
  setenv("WEFT_NRANKS", "4", 1);
  s = launchInfoFromEnv(&i);
  EXPECT_NE(s.message().find("WEFT_RANK=4"), std::string::npos) << s.message();
  setenv("WEFT_RANK", "x", 1);
  s = launchInfoFromEnv(&i);
  EXPECT_NE(s.message().find("not a non-negative integer"), std::string::npos) << s.message();
  setenv("WEFT_RANK", "0", 1);
  s = launchInfoFromEnv(&i);
  EXPECT_NE(s.message().find("WEFT_COMM_ID"), std::string::npos) << s.message();
  setenv("WEFT_COMM_ID", "nohostport", 1);
  s = launchInfoFromEnv(&i);
  EXPECT_NE(s.message().find("host:port"), std::string::npos) << s.message();
  setenv("WEFT_COMM_ID", "[::1]:99999", 1);
  s = launchInfoFromEnv(&i);
  EXPECT_FALSE(s.isOk());
  unsetenv("WEFT_COMM_ID");
  setenv("MASTER_ADDR", "127.0.0.1", 1);
  s = launchInfoFromEnv(&i);
  EXPECT_NE(s.message().find("MASTER_PORT"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace weft::bootstrap
