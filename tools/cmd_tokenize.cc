// engram tokenize / engram detokenize: the model's tokenizer, run locally (no daemon).
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "client.h"
#include "commands.h"
#include "common/file_read.h"
#include "engine_args.h"
#include "text/tokenizer.h"

namespace engram::cli {
namespace {

constexpr const char* kTokenizeUsage =
    "engram tokenize (--tokenizer FILE | --model DIR) (--text T | --file F) "
    "[--add-special-tokens]\n"
    "  Prints the token ids of the text as a JSON array. --add-special-tokens applies the\n"
    "  tokenizer's post-processor (BOS, as the daemon does for text prompts).\n";

constexpr const char* kDetokenizeUsage =
    "engram detokenize (--tokenizer FILE | --model DIR) --ids 1,2,3 [--skip-special-tokens]\n"
    "  Prints the text of the token ids.\n";

// Usage errors: exactly one of each pair of options.
Status CheckOneOf(const Args& args, const char* a, const char* b, const char* what_a,
                  const char* what_b) {
  if (args.Has(a) == args.Has(b)) {
    return InvalidArgument("give exactly one of --{} {} and --{} {}", a, what_a, b, what_b);
  }
  return Status::Ok();
}

// --tokenizer FILE, or --model DIR standing in for DIR/tokenizer.json.
Result<Tokenizer> LoadTokenizer(const Args& args) {
  std::string path;
  if (args.Has("tokenizer")) {
    path = *args.Get("tokenizer");
  } else {
    path = *args.Get("model") + "/tokenizer.json";
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
      return NotFound("--model {}: the directory has no tokenizer.json (use --tokenizer FILE)",
                      *args.Get("model"));
    }
  }
  return Tokenizer::Load(path);
}

Result<std::string> ReadText(const Args& args) {
  if (args.Has("text")) return *args.Get("text");
  const std::string path = *args.Get("file");
  return ReadRegularFile(path, kMaxTokenizerFileBytes, "--file");
}

Status Tokenize(const Args& args) {
  ENGRAM_ASSIGN_OR_RETURN(std::string text, ReadText(args));
  ENGRAM_ASSIGN_OR_RETURN(Tokenizer tok, LoadTokenizer(args));
  ENGRAM_ASSIGN_OR_RETURN(std::vector<int32_t> ids,
                          tok.Encode(text, args.Flag("add-special-tokens")));
  std::string out = "[";
  for (size_t i = 0; i < ids.size(); ++i) out += (i ? ", " : "") + std::to_string(ids[i]);
  out += "]\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
  return Status::Ok();
}

Status Detokenize(const Args& args) {
  ENGRAM_ASSIGN_OR_RETURN(std::vector<int32_t> ids, GetTokenIds(args, "ids"));
  ENGRAM_ASSIGN_OR_RETURN(Tokenizer tok, LoadTokenizer(args));
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] >= tok.vocab_size()) {
      return OutOfRange("--ids element {} = {} is outside the tokenizer's vocabulary [0, {})", i,
                        ids[i], tok.vocab_size());
    }
  }
  const std::string text = tok.Decode(ids, args.Flag("skip-special-tokens"));
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fputc('\n', stdout);
  return Status::Ok();
}

}  // namespace

int RunTokenize(int argc, char** argv) {
  auto args = Args::Parse(argc, argv, 2, {"tokenizer", "model", "text", "file"},
                          {"help", "add-special-tokens"});
  if (!args.ok()) return Fail("tokenize", args.status()) + 1;
  if (args->Flag("help")) {
    std::fprintf(stderr, "%s", kTokenizeUsage);
    return 0;
  }
  for (const Status& usage : {CheckOneOf(*args, "tokenizer", "model", "FILE", "DIR"),
                              CheckOneOf(*args, "text", "file", "T", "F")}) {
    if (!usage.ok()) return Fail("tokenize", usage) + 1;
  }
  Status st = Tokenize(*args);
  return st.ok() ? 0 : Fail("tokenize", st);
}

int RunDetokenize(int argc, char** argv) {
  auto args =
      Args::Parse(argc, argv, 2, {"tokenizer", "model", "ids"}, {"help", "skip-special-tokens"});
  if (!args.ok()) return Fail("detokenize", args.status()) + 1;
  if (args->Flag("help")) {
    std::fprintf(stderr, "%s", kDetokenizeUsage);
    return 0;
  }
  Status usage = CheckOneOf(*args, "tokenizer", "model", "FILE", "DIR");
  if (!usage.ok()) return Fail("detokenize", usage) + 1;
  Status st = Detokenize(*args);
  return st.ok() ? 0 : Fail("detokenize", st);
}

}  // namespace engram::cli
