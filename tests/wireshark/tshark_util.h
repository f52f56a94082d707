// Helpers for the dissector tests: running tshark with
// tools/wireshark/hyperscsi.lua loaded, reading files back.
// Thread-safety: plain functions, used from the test thread.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <utility>

#include "hyperscsi/test_support/process.h"

#ifndef HYPERSCSI_DISSECTOR_LUA
#error "HYPERSCSI_DISSECTOR_LUA must name tools/wireshark/hyperscsi.lua"
#endif

namespace hyperscsi::test_wireshark {

namespace fs = std::filesystem;

using test_support::TempDir;
inline bool have_tshark() {
  return test_support::have_command("tshark");
}
inline std::pair<std::string, int> run(const std::string& cmd) {
  return test_support::run_command(cmd);
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
