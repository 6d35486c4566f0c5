// engram: the companion CLI of engramd (pack, hash, logits, generate, bench).
#include <signal.h>

#include <cstdio>
#include <cstring>
#include <string>

#include <spdlog/sinks/stdout_color_sinks.h>

#include "commands.h"
#include "common/logging.h"

namespace {

void Usage() {
  std::fprintf(
      stderr,
      "usage: engram <command> [options]\n"
      "commands:\n"
      "  pack synth --preset NAME --out DIR [--seed S] [--dtype bf16|f32] [--tokenizer F]\n"
      "  pack checksum --model DIR [--threads N]   (writes engram_checksums.json)\n"
      "  pack verify --model DIR [--threads N]\n"
      "  hash --vectors FILE.json\n"
      "  logits --model DIR|synth:PRESET --ids 1,2,3 --out FILE.npy [--mode prefill|decode]\n"
      "  generate --model DIR|synth:PRESET --prompt-ids 1,2,3 --max-tokens N "
      "[--temperature T] [--seed S]\n"
      "  bench forward --model DIR|synth:PRESET\n"
      "  bench kernels [--threads N] [--runs N] [--rows linear,int8,gathers]\n"
      "  bench offload --model DIR [--modes resident,dram,nvme,sync] [--backend cpu|cuda]\n"
      "                [--workload fixed|paper] [--corpus PATH] [--json]\n"
      "  bench serve --server HOST:PORT --concurrency N --requests M --prompt-len L\n"
      "              --max-tokens T [--json]\n"
      "  bench soak [--minutes M] [--streams N] [--model DIR|synth:PRESET] [--seed S]\n"
      "             [--json FILE]   (the serving stack in-process under random load; leak checks)\n"
      "  generate --server HOST:PORT (--prompt TEXT | --prompt-ids 1,2,3) [--max-tokens N]\n"
      "  stats --server HOST:PORT [--json]\n"
      "  tokenize --tokenizer FILE|--model DIR --text T|--file F\n"
      "  detokenize --tokenizer FILE|--model DIR --ids 1,2,3\n"
      "Run 'engram <command> --help' for the command's options.\n");
}

}  // namespace

int main(int argc, char** argv) {
  // The gRPC clients and `bench soak`'s scraper write to sockets a peer may reset: that fails
  // the write, it does not kill the command.
  signal(SIGPIPE, SIG_IGN);
  // Logs go to stderr, so that stdout holds a command's output alone (--json parses as is).
  spdlog::set_default_logger(spdlog::stderr_color_mt("engram"));
  spdlog::set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
  if (const char* lvl = std::getenv("ENGRAM_LOG_LEVEL")) {
    if (auto st = engram::SetLogLevel(lvl); !st.ok())
      std::fprintf(stderr, "%s\n", st.ToString().c_str());
  }
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    Usage();
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  if (cmd == "hash") return engram::cli::RunHash(argc, argv);
  if (cmd == "pack") return engram::cli::RunPack(argc, argv);
  if (cmd == "logits") return engram::cli::RunLogits(argc, argv);
  if (cmd == "generate") return engram::cli::RunGenerate(argc, argv);
  if (cmd == "bench" && argc > 2 && !std::strcmp(argv[2], "offload")) {
    return engram::cli::RunBenchOffload(argc, argv);
  }
  if (cmd == "bench" && argc > 2 && !std::strcmp(argv[2], "serve")) {
    return engram::cli::RunBenchServe(argc, argv);
  }
  if (cmd == "bench" && argc > 2 && !std::strcmp(argv[2], "soak")) {
    return engram::cli::RunBenchSoak(argc, argv);
  }
  if (cmd == "bench") return engram::cli::RunBench(argc, argv);
  if (cmd == "stats") return engram::cli::RunStats(argc, argv);
  if (cmd == "tokenize") return engram::cli::RunTokenize(argc, argv);
  if (cmd == "detokenize") return engram::cli::RunDetokenize(argc, argv);
  std::fprintf(stderr, "engram: unknown command \"%s\"\n", cmd.c_str());
  Usage();
  return 2;
}
