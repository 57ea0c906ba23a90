// MUNINN_CHECK: programmer invariants. A failed check prints file:line, the condition and any
// streamed message to stderr, then aborts. Never use it for anything input can cause: that is a
// Status (status.h).
#pragma once

#include <sstream>

namespace muninn::internal {

class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* condition);
  [[noreturn]] ~CheckFailure();
  template <typename T>
  CheckFailure& operator<<(const T& v) {
    stream_ << v;
    return *this;
  }

 private:
  std::ostringstream stream_;
};

// Lets `MUNINN_CHECK(x) << "msg";` parse as a void expression.
struct CheckVoidify {
  void operator&(const CheckFailure&) {}
};

}  // namespace muninn::internal

#define MUNINN_CHECK(cond)                \
  (cond) ? (void)0                        \
         : ::muninn::internal::CheckVoidify() & \
               ::muninn::internal::CheckFailure(__FILE__, __LINE__, #cond)

#define MUNINN_CHECK_EQ(a, b) MUNINN_CHECK((a) == (b)) << #a " = " << (a) << ", " #b " = " << (b) << " "
#define MUNINN_CHECK_LT(a, b) MUNINN_CHECK((a) < (b)) << #a " = " << (a) << ", " #b " = " << (b) << " "
#define MUNINN_CHECK_LE(a, b) MUNINN_CHECK((a) <= (b)) << #a " = " << (a) << ", " #b " = " << (b) << " "
#define MUNINN_CHECK_GE(a, b) MUNINN_CHECK((a) >= (b)) << #a " = " << (a) << ", " #b " = " << (b) << " "

#ifdef NDEBUG
#define MUNINN_DCHECK(cond) \
  while (false) MUNINN_CHECK(cond)
#else
#define MUNINN_DCHECK(cond) MUNINN_CHECK(cond)
#endif
