// State files of attached LUNs: one key=value file per FUSE directory in the
// run directory, written by the attach daemon (refreshed every second with
// its counters) and read by detach, list and stats.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace hyperscsi::attach {

using StateMap = std::map<std::string, std::string>;

// $HYPERSCSI_RUN_DIR or /run/hyperscsi-attach.
std::string run_dir();
// Absolute, normalised path of `dir` without touching it (a dead FUSE mount
// cannot be stat'ed).
std::string absolute_path(const std::string& dir);
std::string state_path(const std::string& abs_dir);

bool write_state(const std::string& path, const StateMap& state);  // atomic (rename)
std::optional<StateMap> read_state(const std::string& path);
std::vector<std::string> list_states();  // paths of every state file
bool pid_alive(int pid);

}  // namespace hyperscsi::attach
