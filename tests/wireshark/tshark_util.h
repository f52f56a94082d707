// Helpers for the dissector tests: a private temporary directory, running
// tshark with tools/wireshark/hyperscsi.lua loaded, reading files back.
// Thread-safety: plain functions, used from the test thread.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <utility>

#ifndef HYPERSCSI_DISSECTOR_LUA
#error "HYPERSCSI_DISSECTOR_LUA must name tools/wireshark/hyperscsi.lua"
#endif

namespace hyperscsi::test_wireshark {

namespace fs = std::filesystem;

// A private temporary directory, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string tmpl =
        (fs::temp_directory_path() / ("hs_dissector_" + std::to_string(getpid()) + "_XXXXXX"))
            .string();
    if (mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

inline bool have_tshark() {
  return std::system("command -v tshark >/dev/null 2>&1") == 0;
}

// Runs a shell command; returns its stdout and exit status.
inline std::pair<std::string, int> run(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return {out, -1};
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  return {out, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

// tshark with the dissector loaded; `timeout` bounds it on a loaded machine.
// stderr goes to `err` so a Lua load error is visible in the failure message.
inline std::string tshark(const fs::path& pcap, const std::string& args, const fs::path& err) {
  return "timeout 120 tshark -n -X lua_script:'" HYPERSCSI_DISSECTOR_LUA "' -r '" + pcap.string() +
         "' " + args + " 2>'" + err.string() + "'";
}

inline std::string slurp(const fs::path& file) {
  std::string s;
  if (FILE* fp = std::fopen(file.c_str(), "r")) {
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, fp)) > 0) s.append(buf, n);
    std::fclose(fp);
  }
  return s;
}

}  // namespace hyperscsi::test_wireshark
