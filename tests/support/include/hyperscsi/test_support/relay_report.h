// hyperscsi-relay's statistics as tests read them: it prints one line per
// direction, "a->b key=value key=value ...", when it ends.
// Thread-safety: pure function.
#pragma once

#include <cstdint>
#include <map>
#include <sstream>
#include <string>

namespace hyperscsi::test_support {

// The key=value pairs of the line for direction `dir` ("a->b" or "b->a").
inline std::map<std::string, uint64_t> relay_stats(const std::string& out, const std::string& dir) {
  std::map<std::string, uint64_t> m;
  std::istringstream lines(out);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(dir + " ", 0) != 0) continue;
    std::istringstream words(line.substr(dir.size() + 1));
    std::string w;
    while (words >> w) {
      const size_t eq = w.find('=');
      if (eq == std::string::npos) continue;
      m[w.substr(0, eq)] = std::stoull(w.substr(eq + 1));
    }
  }
  return m;
}

}  // namespace hyperscsi::test_support
