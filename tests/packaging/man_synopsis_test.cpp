// The man pages' SYNOPSIS against the programs: every subcommand a program's
// --help lists has a synopsis, every option its --help lists (per
// subcommand) appears in that command's synopsis, and the synopsis names no
// option or command the program does not have.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

using Options = std::set<std::string>;

std::string run(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return out;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p)) out += buf;
  ::pclose(p);
  return out;
}

// Options of one --help screen (CLI11: "  -w,--workload TEXT ..." lines under
// "Options:"); -h/--help is everywhere and left out.
Options help_options(const std::string& help) {
  Options out;
  std::istringstream in(help);
  std::string line;
  bool in_options = false;
  const std::regex opt(R"((^|[ ,])(--?[a-zA-Z][a-zA-Z0-9-]*))");
  while (std::getline(in, line)) {
    if (line.rfind("Options:", 0) == 0) {
      in_options = true;
      continue;
    }
    if (!line.empty() && line[0] != ' ') in_options = false;
    if (!in_options || line.size() < 3 || line[2] != '-') continue;
    // The option names come before the first space after them.
    const std::string names = line.substr(2, line.find(' ', 2) - 2);
    for (std::sregex_iterator it(names.begin(), names.end(), opt), end; it != end; ++it) {
      const std::string o = (*it)[2];
      if (o != "-h" && o != "--help") out.insert(o);
    }
  }
  return out;
}

// SYNOPSIS blocks of a man page by subcommand ("" for the program itself):
// each ".SY prog" block; a first ".B word" (or ".BR a | b" for commands that
// share a synopsis) that is not an option names the subcommand(s).
std::map<std::string, Options> synopsis_options(std::istream& in) {
  std::string line;
  bool in_synopsis = false;
  std::map<std::string, Options> out;
  std::vector<std::string> subs;
  bool first_word = false;
  const std::regex opt(R"((^|[^a-zA-Z0-9\\-])((\\-|-){1,2}[a-zA-Z][a-zA-Z0-9\\-]*))");
  while (std::getline(in, line)) {
    if (line.rfind(".SH", 0) == 0) {
      in_synopsis = line.find("SYNOPSIS") != std::string::npos;
      continue;
    }
    if (!in_synopsis) continue;
    if (line.rfind(".SY", 0) == 0) {
      first_word = true;
      continue;
    }
    if (first_word) {
      first_word = false;
      subs.assign(1, "");
      const bool b = line.rfind(".B ", 0) == 0, br = line.rfind(".BR ", 0) == 0;
      if ((b || br) && line.find("\\-") == std::string::npos) {
        subs.clear();
        std::istringstream words(line.substr(b ? 3 : 4));
        for (std::string w; words >> w;)
          if (w != "|") subs.push_back(w);
      }
      for (const auto& sub : subs) out[sub];
      if (subs.front() != "") continue;
    }
    for (std::sregex_iterator it(line.begin(), line.end(), opt), end; it != end; ++it) {
      std::string o = (*it)[2];
      for (size_t p; (p = o.find("\\-")) != std::string::npos;) o.replace(p, 2, "-");
      if (o == "-h" || o == "--help") continue;
      for (const auto& sub : subs) out[sub].insert(o);
    }
  }
  return out;
}

std::map<std::string, Options> synopsis_options(const std::string& man_path) {
  std::ifstream in(man_path);
  return synopsis_options(in);
}

// The subcommands a --help screen lists (CLI11: "Subcommands:" then
// "  name   description" lines).
std::set<std::string> help_subcommands(const std::string& help) {
  std::set<std::string> out;
  std::istringstream in(help);
  std::string line;
  bool in_subs = false;
  while (std::getline(in, line)) {
    if (line.rfind("Subcommands:", 0) == 0) {
      in_subs = true;
      continue;
    }
    if (!line.empty() && line[0] != ' ') in_subs = false;
    if (!in_subs || line.size() < 3 || line[2] == ' ') continue;
    out.insert(line.substr(2, line.find(' ', 2) - 2));
  }
  return out;
}

std::string join(const Options& o) {
  std::string s;
  for (const auto& x : o) s += (s.empty() ? "" : " ") + x;
  return s;
}

void expect_same(const std::string& what, const Options& help, const Options& man) {
  Options missing, extra;
  for (const auto& o : help)
    if (!man.count(o)) missing.insert(o);
  for (const auto& o : man)
    if (!help.count(o)) extra.insert(o);
  EXPECT_TRUE(missing.empty()) << what
                               << ": in --help, not in the man page synopsis: " << join(missing);
  EXPECT_TRUE(extra.empty()) << what
                             << ": in the man page synopsis, not in --help: " << join(extra);
}

// The program itself ("") and every subcommand its --help lists.
void check(const std::string& bin, const std::string& man) {
  if (bin.empty()) GTEST_SKIP() << "program not built";
  std::set<std::string> subs = help_subcommands(run(bin + " --help"));
  subs.insert("");
  const auto synopsis = synopsis_options(man);
  ASSERT_FALSE(synopsis.empty()) << "no SYNOPSIS in " << man;
  for (const auto& sub : subs) {
    const Options help = help_options(run(bin + (sub.empty() ? "" : " " + sub) + " --help"));
    ASSERT_FALSE(help.empty() && sub.empty()) << bin << " --help lists no options";
    auto it = synopsis.find(sub);
    ASSERT_NE(it, synopsis.end()) << man << ": no synopsis for '" << sub << "'";
    expect_same(man + (sub.empty() ? "" : " " + sub), help, it->second);
  }
  for (const auto& [sub, opts] : synopsis)
    EXPECT_TRUE(subs.count(sub)) << man << ": synopsis of unknown command '" << sub << "'";
}

TEST(ManSynopsis, ParserReadsSubcommandsAndOptions) {
  std::istringstream man(
      ".SH SYNOPSIS\n.SY prog\n.B attach\n.B \\-\\-port\n.I SPEC\n.RB [ \\-\\-loop ]\n.YS\n"
      ".SY prog\n.BR up | down\n.I NAME\n.RB [ \\-\\-config\n.IR FILE ]\n.YS\n"
      ".SY prog\n.BR \\-\\-help \\ | \\ \\-\\-version\n.YS\n.SH DESCRIPTION\n.B \\-\\-other\n");
  const auto s = synopsis_options(man);
  EXPECT_EQ(s.at("attach"), (Options{"--port", "--loop"}));
  EXPECT_EQ(s.at("up"), (Options{"--config"}));
  EXPECT_EQ(s.at("down"), (Options{"--config"}));
  EXPECT_EQ(s.at(""), (Options{"--version"}));
  EXPECT_EQ(help_options("Usage: x\n\nOptions:\n  -h,--help   help\n  -w,--workload TEXT  w\n"
                         "  --bs TEXT  b\n\nSubcommands:\n  up   u\n"),
            (Options{"-w", "--workload", "--bs"}));
  EXPECT_EQ(help_subcommands("Subcommands:\n  up     attach\n  down   detach\n"),
            (std::set<std::string>{"up", "down"}));
}

TEST(ManSynopsis, HyperscsiAttach) {
  check(HYPERSCSI_ATTACH_BIN, HYPERSCSI_MAN_DIR "/hyperscsi-attach.8");
}

TEST(ManSynopsis, HyperscsiTarget) {
  check(HYPERSCSI_TARGET_BIN, HYPERSCSI_MAN_DIR "/hyperscsi-target.8");
}

TEST(ManSynopsis, HyperscsiBench) {
  check(HYPERSCSI_BENCH_BIN, HYPERSCSI_MAN_DIR "/hyperscsi-bench.1");
}

}  // namespace
