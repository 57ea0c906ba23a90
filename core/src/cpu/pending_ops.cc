// TEMPORARY during the foundation work: ops whose kernels are not written yet. Each kernel file
// removes its entries from here as it lands; this file is deleted when it is empty.
#include "cpu/cpu_ops.h"

namespace muninn::cpu {


}  // namespace muninn::cpu
