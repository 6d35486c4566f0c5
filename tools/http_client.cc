#include "http_client.h"

#include <curl/curl.h>

#include <mutex>

namespace engram::cli {
namespace {

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// Collects the reply; in event mode splits it into "data:" payloads at blank lines.
struct Sink {
  std::string* body;
  const std::function<void(const std::string&)>* on_event;
  std::string pending;
};

size_t Write(char* data, size_t size, size_t n, void* user) {
  auto* sink = static_cast<Sink*>(user);
  const size_t len = size * n;
  if (sink->on_event == nullptr || !*sink->on_event) {
    sink->body->append(data, len);
    return len;
  }
  sink->pending.append(data, len);
  size_t end;
  while ((end = sink->pending.find("\n\n")) != std::string::npos) {
    const std::string event = sink->pending.substr(0, end);
    sink->pending.erase(0, end + 2);
    sink->body->append(event).append("\n\n");
    size_t line_start = 0;
    while (line_start < event.size()) {
      size_t line_end = event.find('\n', line_start);
      if (line_end == std::string::npos) line_end = event.size();
      const std::string line = event.substr(line_start, line_end - line_start);
      if (line.rfind("data:", 0) == 0) {
        (*sink->on_event)(line.size() > 5 && line[5] == ' ' ? line.substr(6) : line.substr(5));
      }
      line_start = line_end + 1;
    }
  }
  return len;
}

}  // namespace

HttpClient::HttpClient(HttpTarget target) : target_(std::move(target)) {
  GlobalInit();
  curl_ = curl_easy_init();
  while (!target_.base_url.empty() && target_.base_url.back() == '/') target_.base_url.pop_back();
}

HttpClient::~HttpClient() {
  if (curl_ != nullptr) curl_easy_cleanup(static_cast<CURL*>(curl_));
}

Status HttpClient::Post(const std::string& path, const std::string& json_body, long* http_status,
                        std::string* body,
                        const std::function<void(const std::string&)>& on_event) {
  *http_status = 0;
  body->clear();
  CURL* c = static_cast<CURL*>(curl_);
  if (c == nullptr) return Internal("curl_easy_init failed");
  curl_easy_reset(c);
  const std::string url = target_.base_url + path;
  Sink sink{body, &on_event, {}};
  curl_slist* headers = nullptr;
  headers = curl_slist_append(headers, "Content-Type: application/json");
  headers = curl_slist_append(headers, "Expect:");  // no 100-continue round trip
  std::string auth;
  if (!target_.api_key.empty()) {
    auth = "Authorization: Bearer " + target_.api_key;
    headers = curl_slist_append(headers, auth.c_str());
  }
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, json_body.data());
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(json_body.size()));
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &Write);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(target_.timeout_s * 1000));
  if (!target_.ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, target_.ca_file.c_str());
  const CURLcode rc = curl_easy_perform(c);
  curl_slist_free_all(headers);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, http_status);
  if (rc != CURLE_OK) {
    return Unavailable("POST {}: {}", url, curl_easy_strerror(rc));
  }
  return Status::Ok();
}

}  // namespace engram::cli
