// The daemon's control socket: a unix stream socket answering one request
// line per connection ("stats" or "stats json") with the per-session counters,
// and the client side used by `hyperscsi-target stats`.
// Thread-safety: ControlServer is used by the daemon's main thread only.
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include "hyperscsi/engine/target_engine.h"
#include "hyperscsi/proto/result.h"

namespace hyperscsi::daemon {

// Text (a table) and JSON renderings of the sessions and engine counters.
std::string format_stats_text(const std::string& target,
                              const std::vector<engine::SessionReport>& s,
                              const engine::EngineStats& st);
std::string format_stats_json(const std::string& target,
                              const std::vector<engine::SessionReport>& s,
                              const engine::EngineStats& st);

class ControlServer {
 public:
  // Answers `request` ("stats", "stats json") with the returned text.
  using Handler = std::function<std::string(const std::string& request)>;
  ControlServer() = default;
  ~ControlServer();  // closes and unlinks the socket
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Creates the directory if needed, replaces a stale socket, listens.
  Status<std::string> listen(const std::string& path, Handler handler);
  int fd() const { return fd_; }
  // Accepts and answers one pending client (bounded by short socket timeouts).
  void serve_one();

 private:
  int fd_ = -1;
  std::string path_;
  Handler handler_;
};

// Client: sends `request`, returns the whole answer.
Result<std::string, std::string> control_request(const std::string& path,
                                                 const std::string& request,
                                                 std::chrono::milliseconds timeout);

}  // namespace hyperscsi::daemon
