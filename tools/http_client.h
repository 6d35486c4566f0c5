// A small HTTP client (libcurl) for the CLI's use of engramd's OpenAI-compatible front door:
// POST a JSON body and receive the reply, either whole or as server-sent events delivered one
// `data:` payload at a time, as they arrive. One HttpClient per thread (a curl easy handle
// reuses its connection across calls).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "common/status.h"

namespace engram::cli {

struct HttpTarget {
  std::string base_url;  // "http://127.0.0.1:8000" or "https://..."; no trailing slash needed
  std::string api_key;   // sent as "Authorization: Bearer KEY" when not empty
  std::string ca_file;   // PEM bundle to verify an https server with; empty: the system's
  double timeout_s = 600;
};

class HttpClient {
 public:
  explicit HttpClient(HttpTarget target);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // POSTs `json_body` to base_url + path. With `on_event`, the reply is read as server-sent
  // events and each `data:` payload (without the prefix) is passed on as it arrives; else
  // the whole reply is in *body. *http_status is the reply's status (0 if none came).
  // UNAVAILABLE with curl's reason when the transfer itself failed.
  Status Post(const std::string& path, const std::string& json_body, long* http_status,
              std::string* body, const std::function<void(const std::string&)>& on_event = {});

 private:
  HttpTarget target_;
  void* curl_ = nullptr;  // CURL*
};

}  // namespace engram::cli
