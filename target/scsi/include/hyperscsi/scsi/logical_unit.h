// LogicalUnit: executes SCSI commands (SPC-4/SBC-3) against one BlockStore.
//
// Driving it: an engine calls execute() for each command and watches
// store().completion_fd() in its event loop, calling store().poll() when it is
// readable; command completions are delivered from execute() (for commands
// that need no I/O) or from inside store().poll(). Many commands may be in
// flight at once; COMPARE AND WRITE is made atomic by LBA-range locking.
//
// Threading: a LogicalUnit and its store are owned by one thread (one event
// loop per port); every method must be called on that thread, and callbacks
// run on it. Nothing here throws on the data path: every failure is a SCSI
// status with fixed-format sense data.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hyperscsi/scsi/command.h"
#include "hyperscsi/scsi/sense.h"
#include "hyperscsi/store/block_store.h"

namespace hyperscsi::scsi {

enum class AccessClass : std::uint8_t;  // reservations.h: how a command touches the medium

struct LuConfig {
  std::string target_name = "hyperscsi-target";  // feeds the NAA identifier
  std::uint64_t lun = 0;
  std::string serial = "0";               // unit serial number (VPD 0x80), printable ASCII
  std::string vendor = "HYPERSCS";        // 8 chars used
  std::string product = "HyperSCSI LUN";  // 16 chars used
  std::string revision = "0001";          // 4 chars used
  std::uint32_t max_transfer_bytes = 8 * 1024 * 1024;  // per READ/WRITE/VERIFY
  std::uint32_t max_unmap_blocks = 0x400000;           // per UNMAP command (VPD 0xB0)
  std::uint32_t max_unmap_descriptors = 256;
  std::uint64_t max_write_same_blocks = 0x400000;
  std::uint8_t max_compare_and_write_blocks = 1;
  std::uint16_t rotation_rate = 1;  // 1 = non-rotating (VPD 0xB1)
  bool write_cache_enabled = true;  // WCE; when off every write is FUA
  // One session at a time: the first nexus that sends a command other than
  // INQUIRY, REPORT LUNS, REQUEST SENSE or REPORT SUPPORTED OPERATION CODES
  // owns the LU until its session ends; commands of other nexuses get
  // RESERVATION CONFLICT.
  bool exclusive = false;
  // Bytes a READ's data buffer keeps free in front of the data for the
  // transport's reply header (CommandResult::data_in_offset).
  std::uint32_t reply_headroom = 0;
};

// What a reopened LU (same LUN number, new store or settings) makes of the
// nexuses that used its predecessor.
enum class Succession : std::uint8_t {
  kSameData,   // same identity: UNIT ATTENTION (2A/09 if the capacity changed, else 29/00)
  kOtherData,  // another disk: their commands fail with LOGICAL UNIT NOT SUPPORTED
};

class Reservations;
class RangeLock;

class LogicalUnit {
 public:
  LogicalUnit(LuConfig config, std::unique_ptr<store::BlockStore> store);
  ~LogicalUnit();
  LogicalUnit(const LogicalUnit&) = delete;
  LogicalUnit& operator=(const LogicalUnit&) = delete;

  // Executes one command. The CDB and nexus are copied; req.data_out must stay
  // valid until `done` runs. `done` runs exactly once, possibly before
  // execute() returns. Destroying the LU drains its store first, so every
  // in-flight command completes (callbacks run) before the LU goes away.
  // Atomicity: COMPARE AND WRITE excludes overlapping READ/WRITE/VERIFY/WRITE
  // SAME through LBA-range locks; UNMAP is not range-locked.
  void execute(const CommandRequest& req, CommandCallback done);

  store::BlockStore& store() { return *store_; }
  const LuConfig& config() const { return config_; }
  // 8-byte NAA (locally assigned, NAA=3) designator derived from the store's
  // identity (store::StoreIdentity; it follows the data across restarts and
  // hosts), or from target name, LUN and serial for a store without one.
  std::array<std::uint8_t, 8> naa_identifier() const;
  std::size_t commands_in_flight() const { return in_flight_; }
  bool write_cache_enabled() const { return wce_; }

  // LOGICAL UNIT RESET: RESERVE(6) released, UNIT ATTENTION 29/03 for every nexus.
  void reset();
  // The store's capacity changed: UNIT ATTENTION 2A/09 for every nexus.
  void capacity_changed();
  // The nexus ended: forget its unit-attention state, its exclusive claim
  // and its fence.
  void nexus_gone(const Nexus& nexus);
  // Nexuses that sent commands to this LU and have not ended.
  std::vector<Nexus> nexuses() const;
  // The exclusive owner, when config().exclusive and claimed.
  const std::optional<Nexus>& owner() const { return owner_; }
  // Takes over the nexuses (and exclusive owner) of the LU this one replaces.
  void succeed(const std::vector<Nexus>& nexuses, const std::optional<Nexus>& owner, Succession how,
               bool capacity_changed);

 private:
  struct Cmd;
  struct NexusState {
    Nexus nexus;
    std::deque<Sense> unit_attentions;
  };
  NexusState& nexus_state(const Nexus& n);
  void queue_ua_for_initiator(const std::string& initiator, const Sense& s,
                              const Nexus* except = nullptr);
  void queue_ua_all(const Sense& s, const Nexus* except = nullptr);

  void dispatch(const std::shared_ptr<Cmd>& c);  // check_cdb, check_access, execute_opcode
  bool check_cdb(const std::shared_ptr<Cmd>& c, AccessClass& ac);
  bool check_access(const std::shared_ptr<Cmd>& c, AccessClass ac);
  void execute_opcode(const std::shared_ptr<Cmd>& c);
  void finish(const std::shared_ptr<Cmd>& c);
  void fail(const std::shared_ptr<Cmd>& c, const Sense& s);
  // `data` starts with `headroom` bytes that are not data (a READ's room for
  // the transport's header).
  void good_data(const std::shared_ptr<Cmd>& c, std::vector<std::uint8_t> data,
                 std::uint32_t allocation_length, std::uint32_t headroom = 0);
  // A READ's data: `length` bytes after `headroom` in `buf` (shared, not copied).
  void good_read(const std::shared_ptr<Cmd>& c, std::shared_ptr<std::uint8_t[]> buf,
                 std::size_t length, std::uint32_t headroom);

  void do_request_sense(const std::shared_ptr<Cmd>& c);
  void do_inquiry(const std::shared_ptr<Cmd>& c);
  void do_read_capacity10(const std::shared_ptr<Cmd>& c);
  void do_service_action_in16(const std::shared_ptr<Cmd>& c);
  void do_read_capacity16(const std::shared_ptr<Cmd>& c);
  void do_get_lba_status(const std::shared_ptr<Cmd>& c);
  void do_read(const std::shared_ptr<Cmd>& c, std::uint64_t lba, std::uint64_t blocks,
               std::uint8_t protect);
  void do_write(const std::shared_ptr<Cmd>& c, std::uint64_t lba, std::uint64_t blocks, bool fua,
                std::uint8_t protect);
  void do_verify(const std::shared_ptr<Cmd>& c, std::uint64_t lba, std::uint64_t blocks,
                 std::uint8_t byte1);
  void do_sync_cache(const std::shared_ptr<Cmd>& c, std::uint64_t lba, std::uint64_t blocks);
  void do_mode_sense(const std::shared_ptr<Cmd>& c, bool ten);
  void do_mode_select(const std::shared_ptr<Cmd>& c, bool ten);
  void do_start_stop(const std::shared_ptr<Cmd>& c);
  void do_unmap(const std::shared_ptr<Cmd>& c);
  void do_write_same(const std::shared_ptr<Cmd>& c, bool sixteen);
  void do_compare_and_write(const std::shared_ptr<Cmd>& c);
  void do_pr_in(const std::shared_ptr<Cmd>& c);
  void do_pr_out(const std::shared_ptr<Cmd>& c);
  void do_reserve6(const std::shared_ptr<Cmd>& c);
  void do_release6(const std::shared_ptr<Cmd>& c);
  void do_report_opcodes(const std::shared_ptr<Cmd>& c);

  // Checks data_out holds `needed` bytes; fails the command otherwise.
  bool take_data_out(const std::shared_ptr<Cmd>& c, std::size_t needed);
  // Runs `body` under an LBA range lock, releasing it when the command ends.
  void with_range_lock(const std::shared_ptr<Cmd>& c, std::uint64_t lba, std::uint64_t blocks,
                       bool exclusive, void (LogicalUnit::*body)(const std::shared_ptr<Cmd>&));
  void run_read(const std::shared_ptr<Cmd>& c);
  void run_write(const std::shared_ptr<Cmd>& c);
  void run_verify(const std::shared_ptr<Cmd>& c);
  void run_compare_and_write(const std::shared_ptr<Cmd>& c);
  void run_write_same(const std::shared_ptr<Cmd>& c);
  void run_unmap(const std::shared_ptr<Cmd>& c);

  LuConfig config_;
  std::unique_ptr<store::BlockStore> store_;
  std::unique_ptr<Reservations> reservations_;
  std::unique_ptr<RangeLock> range_lock_;
  std::vector<NexusState> nexuses_;
  std::optional<Nexus> owner_;  // exclusive LU: the nexus that holds it
  std::vector<Nexus> fenced_;   // knew another disk under this LUN number
  std::size_t in_flight_ = 0;
  bool wce_;
  bool started_ = true;
};

}  // namespace hyperscsi::scsi
