#include "cdb.h"

namespace hyperscsi::scsi {

std::size_t cdb_length_for_opcode(std::uint8_t opcode) {
  switch (opcode >> 5) {
    case 0:
      return 6;
    case 1:
    case 2:
      return 10;
    case 4:
      return 16;
    case 5:
      return 12;
    default:
      return 0;
  }
}

}  // namespace hyperscsi::scsi
