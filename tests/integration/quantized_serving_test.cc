// engramd serves quantized checkpoints unchanged (issue 12, "Serving"): a model directory whose
// Linear weights `engram pack quantize --weights fp8|int8` stored quantized loads with the
// default `backend.weights: auto`, GetModelInfo names the format it runs in, and requests
// stream to their length; `backend.weights: bf16` dequantizes the same files.
#include <gtest/gtest.h>

#include "../support/shell.h"
#include "../support/temp_dir.h"
#include "daemon_process.h"
#include "rpc_helpers.h"

namespace engram::testing {
namespace {

struct Case {
  std::string pack;     // --weights of pack quantize
  std::string weights;  // backend.weights
  std::string expect;   // GetModelInfo.weights
};

TEST(QuantizedServing, QuantizedCheckpointsServeAndNameTheirFormat) {
  testutil::TempDir dir;
  const std::string base = dir / "tiny";
  ASSERT_EQ(Shell(std::string(ENGRAM_CLI) + " pack synth --preset tiny --tokenizer " +
                  FixtureTokenizer() + " --out " + base),
            0);
  for (const Case& c :
       {Case{"fp8", "auto", "fp8"}, Case{"int8", "auto", "int8"}, Case{"fp8", "bf16", "bf16"}}) {
    const std::string model = dir / ("tiny-" + c.pack);
    if (!std::filesystem::exists(model)) {
      ASSERT_EQ(Shell(std::string(ENGRAM_CLI) + " pack quantize --quiet --model " + base +
                      " --out " + model + " --weights " + c.pack),
                0);
    }
    DaemonOptions o;
    o.model = model;
    o.tokenizer = "";  // the directory's tokenizer.json
    o.backend_weights = c.weights;
    auto d = DaemonProcess::Start(o);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    auto channel = grpc::CreateChannel((*d)->address(), grpc::InsecureChannelCredentials());
    auto stub = v1::Engram::NewStub(channel);
    v1::ModelInfo info;
    ASSERT_TRUE(GetModelInfo(*stub, &info).ok());
    EXPECT_EQ(info.weights(), c.expect) << c.pack << " files, weights " << c.weights;
    const StreamResult r = Generate(*stub, TextRequest("The quick brown fox", 8));
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.finish, v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(r.ids.size(), 8u);
    EXPECT_EQ(ExitDescription((*d)->Stop()), "exit code 0");
  }
}

}  // namespace
}  // namespace engram::testing
