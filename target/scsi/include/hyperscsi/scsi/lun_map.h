// LunMap: a plain LUN -> LogicalUnit map for single-threaded owners (tests,
// the fuzzer); the engine's device is scsi::Device (device.h). Answers
// REPORT LUNS itself and gives commands for absent LUNs the SPC-4 treatment
// (INQUIRY: peripheral qualifier 011b; REQUEST SENSE: sense data with
// LOGICAL UNIT NOT SUPPORTED; everything else: CHECK CONDITION 05/25/00).
// Threading: owned by one thread, like the LogicalUnits it holds.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "hyperscsi/base/result.h"
#include "hyperscsi/base/scsi_opcodes.h"
#include "hyperscsi/scsi/command.h"
#include "hyperscsi/scsi/logical_unit.h"

namespace hyperscsi::scsi {

// SAM-5 single-level LUN encoding: peripheral addressing below 256, flat space
// up to 16383.
inline constexpr std::uint64_t kMaxLun = 16383;
std::array<std::uint8_t, 8> encode_lun(std::uint64_t lun);
// Inverse of encode_lun; nullopt for other address methods or multi-level LUNs.
std::optional<std::uint64_t> decode_lun(std::span<const std::uint8_t> lun8);

// REPORT LUNS (SPC-4 6.33), built in this one place for every answerer (the
// LunMap, a LogicalUnit on its own, the engine's per-initiator view): GOOD
// with `luns` (ascending, each <= kMaxLun) clipped to the CDB's allocation
// length and to `expected_data_in`; CHECK CONDITION ILLEGAL REQUEST for a
// short CDB, NACA or LINK set, or a SELECT REPORT other than 0..2.
CommandResult report_luns(std::span<const std::uint8_t> cdb, std::span<const std::uint64_t> luns,
                          std::uint32_t expected_data_in);

// The SPC-4 answers for a LUN that is absent (or hidden from this initiator):
// INQUIRY: peripheral qualifier 011b; REQUEST SENSE: LOGICAL UNIT NOT
// SUPPORTED sense data; everything else CHECK CONDITION 05/25/00. `done` runs
// before this returns.
void answer_absent_lun(const CommandRequest& req, CommandCallback done);

class LunMap {
 public:
  // Takes ownership. Errors: LUN out of range or already present.
  Status<std::string> add(std::uint64_t lun, std::unique_ptr<LogicalUnit> unit);
  // Removes and returns the unit (nullptr if absent); the caller drains it.
  std::unique_ptr<LogicalUnit> remove(std::uint64_t lun);
  LogicalUnit* find(std::uint64_t lun);
  std::vector<std::uint64_t> luns() const;
  std::size_t size() const { return units_.size(); }

  // Routes one command; same contract as LogicalUnit::execute.
  void execute(std::uint64_t lun, const CommandRequest& req, CommandCallback done);
  // Runs store completions of every unit (for simple single-loop owners and tests).
  std::size_t poll_all();

 private:
  std::map<std::uint64_t, std::unique_ptr<LogicalUnit>> units_;
};

}  // namespace hyperscsi::scsi
