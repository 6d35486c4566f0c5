// engramd: the Engram inference daemon. Starts the gRPC server (health NOT_SERVING) and the
// OpenAI-compatible HTTP server (/health 503), loads the model, then serves (health SERVING).
// SIGTERM/SIGINT drain: stop accepting, let running requests finish within server.drain_grace_s,
// end the rest with UNAVAILABLE, exit; a second SIGTERM/SIGINT during the drain ends it at once.
// SIGHUP is ignored (logged): engramd has no configuration reload. SIGPIPE is ignored process-wide:
// a peer that resets a connection can only fail that connection's write.
// Under systemd (Type=notify, deploy/systemd/engramd.service) it reports STATUS= while loading,
// READY=1 when health turns SERVING, STOPPING=1 when the drain starts, and WATCHDOG=1 while the
// engine loop makes progress (runtime/daemon/service_notify.h).
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/support/channel_arguments.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include "common/host_port.h"
#include "common/logging.h"
#include "runtime/api_keys.h"
#include "runtime/daemon/service_notify.h"
#include "runtime/engine_loop.h"
#include "runtime/grpc_service.h"
#include "runtime/http_api.h"
#include "runtime/metrics_exporter.h"
#include "runtime/server_config.h"
#include "runtime/tls_files.h"
#include "runtime/version.h"

namespace engram {
namespace {

constexpr const char* kUsage =
    "usage: engramd --config FILE       serve the model FILE describes\n"
    "       engramd --check-config FILE validate FILE (and open its model), print the effective\n"
    "                                   configuration, exit 0 if valid\n"
    "       engramd --help | --version\n"
    "See docs/operations.md for the configuration keys.\n";

int CheckConfig(const std::string& path) {
  auto cfg = ServerConfig::LoadFile(path);
  if (!cfg.ok()) {
    std::fprintf(stderr, "engramd: %s\n", cfg.status().message().c_str());
    return 2;
  }
  if (Status st = cfg->CheckEnvironment(); !st.ok()) {
    std::fprintf(stderr, "engramd: %s: %s\n", path.c_str(), st.message().c_str());
    return 2;
  }
  auto files = cfg->OpenModelFiles();
  if (!files.ok()) {
    std::fprintf(stderr, "engramd: %s: model: %s\n", path.c_str(),
                 files.status().ToString().c_str());
    return 2;
  }
  std::printf("%s", cfg->ToYaml().c_str());
  std::fprintf(stderr, "engramd: %s is valid (model %s: %lld layers, vocab %lld)\n", path.c_str(),
               files->source.c_str(), static_cast<long long>(files->config.num_hidden_layers),
               static_cast<long long>(files->config.vocab_size));
  return 0;
}

// Whether `addr` can be bound now, as gRPC will bind it (SO_REUSEADDR, never SO_REUSEPORT):
// a port another process holds is refused here with a message naming it, instead of gRPC's
// bare failure.
Status ProbeListen(const ResolvedAddress& addr, std::string_view key, const std::string& text) {
  const int fd = ::socket(addr.family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus(StatusCode::kUnavailable, std::string(key) + ": socket", errno);
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  const int rc = ::bind(fd, reinterpret_cast<const sockaddr*>(&addr.addr), addr.len);
  const int err = errno;
  ::close(fd);
  if (rc == 0) return Status::Ok();
  if (err == EADDRINUSE) {
    return Unavailable(
        "{}: {} is already in use (another engramd, or another server, listens "
        "there; pick another port or stop it)",
        key, text);
  }
  return ErrnoStatus(StatusCode::kUnavailable, fmt::format("{}: cannot bind {}", key, text), err);
}

int Serve(const std::string& path) {
  auto cfg_or = ServerConfig::LoadFile(path);
  if (!cfg_or.ok()) {
    std::fprintf(stderr, "engramd: %s\n", cfg_or.status().message().c_str());
    return 2;
  }
  const ServerConfig cfg = std::move(cfg_or).value();
  if (Status st = SetLogLevel(cfg.logging.level); !st.ok()) {
    std::fprintf(stderr, "engramd: %s\n", st.ToString().c_str());
    return 2;
  }
  for (const auto& [key, text] :
       {std::pair<std::string_view, std::string>{"server.listen", cfg.server.listen},
        {"metrics.listen", cfg.metrics.listen},
        {"http.listen", cfg.http.listen}}) {
    if (text.empty()) continue;
    auto addr = ResolveListenAddress(text, key);
    Status st = addr.ok() ? ProbeListen(*addr, key, text) : addr.status();
    if (!st.ok()) {
      std::fprintf(stderr, "engramd: %s: %s\n", path.c_str(), st.message().c_str());
      return 2;
    }
  }
  const ServiceNotifier notify;
  if (notify.enabled()) {
    spdlog::info(
        "systemd: notifications on{}",
        notify.watchdog_interval().count() > 0
            ? fmt::format(", watchdog every {} ms", notify.watchdog_interval().count() / 1000)
            : "");
  }
  // The last STATUS= is what `systemctl status` shows for a start that failed.
  auto failed = [&notify](const std::string& what) { notify.Status("failed: " + what); };
  // Signals go to the sigwait below only: block them before any thread starts.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  // Security (docs/operations.md "Security"): the same TLS material and keys on both listeners.
  auto tls = LoadTlsFiles(cfg);
  auto keys = ApiKeys::Load(cfg);
  for (const Status& st : {tls.status(), keys.status()}) {
    if (!st.ok()) {
      std::fprintf(stderr, "engramd: %s: %s\n", path.c_str(), st.message().c_str());
      return 2;
    }
  }
  const ApiKeys api_keys = std::move(keys).value();
  std::function<bool(std::string_view)> authorize;
  if (api_keys.enabled()) {
    authorize = [&api_keys](std::string_view h) { return api_keys.Check(h); };
  }
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  if (*tls) {
    grpc::SslServerCredentialsOptions so(
        (*tls)->client_ca_pem.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                      : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    so.pem_root_certs = (*tls)->client_ca_pem;
    so.pem_key_cert_pairs.push_back({(*tls)->key_pem, (*tls)->cert_pem});
    creds = grpc::SslServerCredentials(so);
  }
  spdlog::info("security: TLS {}{}, API keys {}", *tls ? "on" : "off",
               *tls && !(*tls)->client_ca_pem.empty() ? " (client certificates required)" : "",
               api_keys.enabled() ? fmt::format("required ({})", api_keys.size()) : "off");

  ServiceOptions sopt;
  sopt.authorize = authorize;
  EngramService service(sopt);
  grpc::EnableDefaultHealthCheckService(true);
  // Reflection cannot check a key (its service is gRPC's own): with keys it is not offered.
  if (!api_keys.enabled()) grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(cfg.server.listen, creds, &port);
  // gRPC sets SO_REUSEPORT by default: a second engramd on the same port would then start
  // and silently take half of the connections.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(cfg.server.max_message_bytes);
  builder.SetMaxSendMessageSize(cfg.server.max_message_bytes);
  if (cfg.server.handler_threads > 0) {
    builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS,
                                cfg.server.handler_threads);
  }
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    std::fprintf(stderr,
                 "engramd: cannot listen on %s (server.listen): the address is in use or not "
                 "local\n",
                 cfg.server.listen.c_str());
    return 1;
  }
  auto* health = server->GetHealthCheckService();
  health->SetServingStatus(false);
  const std::string host = cfg.server.listen.substr(0, cfg.server.listen.rfind(':'));
  std::printf("engramd %s: listening on %s:%d\n", Version(), host.c_str(), port);
  std::fflush(stdout);
  spdlog::info("listening on {}:{} (health NOT_SERVING until the model is loaded)", host, port);
  notify.Status(fmt::format("listening on {}:{}; loading the model", host, port));

  // The HTTP front door answers /health (503) while the model loads.
  HttpApiOptions hopt;
  hopt.model_name = cfg.ServedModelName();
  hopt.authorize = authorize;
  hopt.metrics_require_auth = cfg.metrics.require_auth;
  hopt.require_client_cert = *tls && !(*tls)->client_ca_pem.empty();
  HttpApi http_api(hopt);
  std::unique_ptr<HttpServer> http;
  if (!cfg.http.listen.empty()) {
    HttpServerOptions o;
    o.what = "http.listen";
    o.thread_per_connection = true;
    o.idle_timeout_s = static_cast<unsigned>(cfg.http.idle_timeout_s);
    o.max_connections = static_cast<unsigned>(cfg.http.max_connections);
    o.max_body_bytes = static_cast<size_t>(cfg.http.max_body_bytes);
    o.connection_memory = 64 << 10;  // request heads up to ~64 KiB
    if (*tls) o.tls = HttpTls{(*tls)->cert_pem, (*tls)->key_pem, (*tls)->client_ca_pem};
    o.error_response = [](int status, const std::string& reason) {
      ApiError e;
      e.http_status = status;
      e.message = reason;
      e.type = status >= 500 ? "server_error" : "invalid_request_error";
      HttpResponse r;
      r.status = status;
      r.content_type = "application/json";
      r.body = ErrorBody(e);
      return r;
    };
    auto h = HttpServer::Start(
        cfg.http.listen, [&http_api](const HttpRequest& r) { return http_api.Handle(r); }, o);
    if (!h.ok()) {
      std::fprintf(stderr, "engramd: %s\n", h.status().message().c_str());
      server->Shutdown();
      return 1;
    }
    http = std::move(h).value();
    const std::string hhost = cfg.http.listen.substr(0, cfg.http.listen.rfind(':'));
    std::printf("engramd: http listening on %s:%d%s\n", hhost.c_str(), http->port(),
                *tls ? " (https)" : "");
    std::fflush(stdout);
    spdlog::info("http listening on {}:{} (OpenAI-compatible; model id \"{}\")", hhost,
                 http->port(), hopt.model_name);
  }

  // Load the model while the server already answers health checks.
  notify.Status("opening the model files");
  auto files = cfg.OpenModelFiles();
  if (!files.ok()) {
    spdlog::error("model: {}", files.status().ToString());
    failed("model: " + files.status().ToString());
    server->Shutdown();
    return 1;
  }
  std::shared_ptr<const Tokenizer> tokenizer;
  if (!files->tokenizer_path.empty()) {
    notify.Status("loading the tokenizer");
    TokenizerOptions topt;
    topt.add_bos = cfg.add_bos;
    auto tok = Tokenizer::Load(files->tokenizer_path, topt);
    if (!tok.ok()) {
      spdlog::error("tokenizer: {}", tok.status().ToString());
      failed("tokenizer: " + tok.status().ToString());
      server->Shutdown();
      return 1;
    }
    tokenizer = std::make_shared<const Tokenizer>(std::move(tok).value());
  }
  EngineOptions eopt = cfg.ToEngineOptions();
  eopt.on_phase = [&notify](const std::string& what) { notify.Status(what); };
  auto engine = Engine::Create(std::move(files).value(), eopt);
  if (!engine.ok()) {
    spdlog::error("engine: {}", engine.status().ToString());
    failed("engine: " + engine.status().ToString());
    server->Shutdown();
    return 1;
  }
  const std::string backend_name(engine.value()->backend().name());
  auto loop =
      std::make_unique<EngineLoop>(std::move(engine).value(), tokenizer, cfg.ToServingOptions());
  service.SetLoop(loop.get(), tokenizer,
                  DescribeModel(loop->engine(), backend_name, tokenizer != nullptr));
  ChatRenderer render_chat;
  if (std::shared_ptr<const ChatTemplate> tmpl = loop->engine().files().chat_template) {
    spdlog::info("chat template: {}", tmpl->source());
    render_chat = [tmpl](const nlohmann::ordered_json& messages, bool add_generation_prompt,
                         const nlohmann::ordered_json& tools,
                         const nlohmann::ordered_json& kwargs) {
      return tmpl->Render(messages, add_generation_prompt, tools, kwargs);
    };
  } else {
    spdlog::info("no chat template: /v1/chat/completions answers 400");
  }
  http_api.SetLoop(loop.get(), tokenizer, std::move(render_chat));
  std::unique_ptr<MetricsExporter> metrics;
  if (!cfg.metrics.listen.empty()) {
    auto m = MetricsExporter::Start(cfg.metrics.listen, *loop);
    if (!m.ok()) {
      spdlog::error("{}", m.status().ToString());
      failed(m.status().ToString());
      loop.reset();
      server->Shutdown();
      return 1;
    }
    metrics = std::move(m).value();
    const std::string mhost = cfg.metrics.listen.substr(0, cfg.metrics.listen.rfind(':'));
    std::printf("engramd: metrics on http://%s:%d/metrics\n", mhost.c_str(), metrics->port());
  }
  health->SetServingStatus(true);
  notify.Ready(fmt::format("serving {} on {}", loop->engine().files().source, backend_name));
  // Pings only while the engine thread's loop advances: a wedged engine stops them.
  auto heartbeat = std::make_unique<WatchdogHeartbeat>(
      notify.watchdog_interval(), [&loop] { return loop->LastProgress(); },
      [&notify] { notify.Watchdog(); });
  std::printf("engramd: ready (%s)\n", loop->engine().files().source.c_str());
  std::fflush(stdout);
  spdlog::info("serving {} on {}", loop->engine().files().source, backend_name);

  int sig = 0;
  bool healthy = true;
  while (true) {
    const timespec second{1, 0};
    sig = sigtimedwait(&sigs, nullptr, &second);
    if (sig == SIGTERM || sig == SIGINT) break;
    if (sig == SIGHUP) {
      spdlog::warn("SIGHUP ignored: engramd has no configuration reload (SIGTERM drains it)");
    }
    // A model file that shrank or changed while served: keep answering (with errors that say
    // so), but tell load balancers to stop sending.
    if (healthy && !loop->ModelHealth().ok()) {
      healthy = false;
      health->SetServingStatus(false);
      spdlog::error("health NOT_SERVING: {}", loop->ModelHealth().message());
      notify.Status("NOT_SERVING: " + loop->ModelHealth().message());
    }
  }
  spdlog::info("{}: draining (grace {} s, {} requests in flight)", strsignal(sig),
               cfg.server.drain_grace_s, loop->InFlight());
  notify.Stopping(fmt::format("draining ({} requests in flight)", loop->InFlight()));
  health->SetServingStatus(false);
  http_api.BeginDrain();
  loop->BeginDrain();
  const auto grace_end = std::chrono::steady_clock::now() +
                         std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                             std::chrono::duration<double>(cfg.server.drain_grace_s));
  bool hurry = false;  // a second SIGTERM/SIGINT: end the drain now
  while (!hurry && loop->InFlight() > 0 && std::chrono::steady_clock::now() < grace_end) {
    const timespec tick{0, 20'000'000};
    const int s2 = sigtimedwait(&sigs, nullptr, &tick);
    if (s2 == SIGHUP) spdlog::warn("SIGHUP ignored during the drain");
    if (s2 == SIGTERM || s2 == SIGINT) {
      spdlog::warn("{} during the drain: ending the {} requests in flight now", strsignal(s2),
                   loop->InFlight());
      hurry = true;
    }
  }
  if (loop->InFlight() > 0) {
    if (!hurry) {
      spdlog::warn("drain grace of {} s ended with {} requests in flight: ending them",
                   cfg.server.drain_grace_s, loop->InFlight());
    }
    loop->AbortAll(hurry ? Unavailable("server shutting down: a second stop signal ended the "
                                       "drain")
                         : Unavailable("server shutting down: the drain grace period of {} s "
                                       "ended",
                                       cfg.server.drain_grace_s));
    const auto abort_end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (loop->InFlight() > 0 && std::chrono::steady_clock::now() < abort_end) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  // A stream whose request finished may still be writing its last events and the end of its
  // chunked body: let it (as gRPC's Shutdown lets its calls) before the connections close.
  if (http != nullptr &&
      !http->WaitIdle(std::chrono::steady_clock::now() + std::chrono::seconds(2))) {
    spdlog::warn("{} HTTP responses still being written after 2 s: closing them",
                 http->requests_in_progress());
  }
  http.reset();  // closes its connections; their streams end before the loop goes
  metrics.reset();
  heartbeat.reset();  // reads the loop
  loop.reset();
  spdlog::info("stopped");
  return 0;
}

}  // namespace
}  // namespace engram

int main(int argc, char** argv) {
  // Before any thread or socket exists: a write to a peer that reset its connection returns
  // EPIPE on that connection instead of killing the process.
  signal(SIGPIPE, SIG_IGN);
  spdlog::set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
  if (argc == 2 && (!std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h"))) {
    std::printf("%s", engram::kUsage);
    return 0;
  }
  if (argc == 2 && !std::strcmp(argv[1], "--version")) {
    std::printf("engramd %s\n", engram::Version());
    return 0;
  }
  if (argc == 3 && !std::strcmp(argv[1], "--config")) return engram::Serve(argv[2]);
  if (argc == 3 && !std::strcmp(argv[1], "--check-config")) return engram::CheckConfig(argv[2]);
  std::fprintf(stderr, "%s", engram::kUsage);
  return 2;
}
