#include "muninn/model/metadata_value.h"

#include <cstring>
#include <limits>
#include <sstream>

namespace muninn::model {
namespace {

bool IsIntegerType(MetadataType t) {
  switch (t) {
    case MetadataType::kU8:
    case MetadataType::kI8:
    case MetadataType::kU16:
    case MetadataType::kI16:
    case MetadataType::kU32:
    case MetadataType::kI32:
    case MetadataType::kU64:
    case MetadataType::kI64:
      return true;
    default:
      return false;
  }
}

bool IsSignedType(MetadataType t) {
  return t == MetadataType::kI8 || t == MetadataType::kI16 || t == MetadataType::kI32 ||
         t == MetadataType::kI64;
}

bool IsFloatType(MetadataType t) { return t == MetadataType::kF32 || t == MetadataType::kF64; }

// Reads a little-endian scalar of type `t` at `p` as raw bits (sign-extended for signed
// integers) or, for floats, stores the value in *real.
uint64_t DecodeBits(MetadataType t, const uint8_t* p, double* real) {
  uint64_t v = 0;
  const size_t n = MetadataScalarSize(t);
  for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  switch (t) {
    case MetadataType::kI8:
      return static_cast<uint64_t>(static_cast<int64_t>(static_cast<int8_t>(v)));
    case MetadataType::kI16:
      return static_cast<uint64_t>(static_cast<int64_t>(static_cast<int16_t>(v)));
    case MetadataType::kI32:
      return static_cast<uint64_t>(static_cast<int64_t>(static_cast<int32_t>(v)));
    case MetadataType::kF32: {
      const uint32_t b = static_cast<uint32_t>(v);
      float f;
      std::memcpy(&f, &b, 4);
      *real = f;
      return 0;
    }
    case MetadataType::kF64: {
      double d;
      std::memcpy(&d, &v, 8);
      *real = d;
      return 0;
    }
    default:
      return v;
  }
}

void AppendLe(std::vector<uint8_t>* out, uint64_t bits, size_t n) {
  for (size_t i = 0; i < n; ++i) out->push_back(static_cast<uint8_t>(bits >> (8 * i)));
}

}  // namespace

std::string_view MetadataTypeName(MetadataType type) {
  switch (type) {
    case MetadataType::kU8: return "u8";
    case MetadataType::kI8: return "i8";
    case MetadataType::kU16: return "u16";
    case MetadataType::kI16: return "i16";
    case MetadataType::kU32: return "u32";
    case MetadataType::kI32: return "i32";
    case MetadataType::kF32: return "f32";
    case MetadataType::kBool: return "bool";
    case MetadataType::kString: return "string";
    case MetadataType::kArray: return "array";
    case MetadataType::kU64: return "u64";
    case MetadataType::kI64: return "i64";
    case MetadataType::kF64: return "f64";
  }
  return "invalid";
}

size_t MetadataScalarSize(MetadataType type) {
  switch (type) {
    case MetadataType::kU8:
    case MetadataType::kI8:
    case MetadataType::kBool:
      return 1;
    case MetadataType::kU16:
    case MetadataType::kI16:
      return 2;
    case MetadataType::kU32:
    case MetadataType::kI32:
    case MetadataType::kF32:
      return 4;
    case MetadataType::kU64:
    case MetadataType::kI64:
    case MetadataType::kF64:
      return 8;
    case MetadataType::kString:
    case MetadataType::kArray:
      return 0;
  }
  return 0;
}

bool IsValidMetadataType(uint32_t id) { return id <= static_cast<uint32_t>(MetadataType::kF64); }

// ---- construction ----

#define MUNINN_INT_FACTORY_(Name, CType, Tag)                  \
  MetadataValue MetadataValue::Name(CType v) {                 \
    MetadataValue m;                                           \
    m.type_ = MetadataType::Tag;                               \
    m.bits_ = static_cast<uint64_t>(static_cast<int64_t>(v));  \
    return m;                                                  \
  }
MUNINN_INT_FACTORY_(U8, uint8_t, kU8)
MUNINN_INT_FACTORY_(I8, int8_t, kI8)
MUNINN_INT_FACTORY_(U16, uint16_t, kU16)
MUNINN_INT_FACTORY_(I16, int16_t, kI16)
MUNINN_INT_FACTORY_(U32, uint32_t, kU32)
MUNINN_INT_FACTORY_(I32, int32_t, kI32)
MUNINN_INT_FACTORY_(I64, int64_t, kI64)
#undef MUNINN_INT_FACTORY_

MetadataValue MetadataValue::U64(uint64_t v) {
  MetadataValue m;
  m.type_ = MetadataType::kU64;
  m.bits_ = v;
  return m;
}

MetadataValue MetadataValue::F32(float v) {
  MetadataValue m;
  m.type_ = MetadataType::kF32;
  m.real_ = v;
  return m;
}

MetadataValue MetadataValue::F64(double v) {
  MetadataValue m;
  m.type_ = MetadataType::kF64;
  m.real_ = v;
  return m;
}

MetadataValue MetadataValue::Bool(bool v) {
  MetadataValue m;
  m.type_ = MetadataType::kBool;
  m.bits_ = v ? 1 : 0;
  return m;
}

MetadataValue MetadataValue::String(std::string v) {
  MetadataValue m;
  m.type_ = MetadataType::kString;
  m.string_ = std::move(v);
  return m;
}

MetadataValue MetadataValue::ScalarArray(MetadataType elem, std::vector<uint8_t> raw) {
  const size_t size = MetadataScalarSize(elem);
  MUNINN_CHECK(size > 0) << "ScalarArray of " << MetadataTypeName(elem);
  MUNINN_CHECK(raw.size() % size == 0) << raw.size() << " bytes of " << MetadataTypeName(elem);
  MetadataValue m;
  m.type_ = MetadataType::kArray;
  m.elem_type_ = elem;
  m.count_ = raw.size() / size;
  m.raw_ = std::move(raw);
  return m;
}

MetadataValue MetadataValue::IntArray(MetadataType elem, std::span<const int64_t> values) {
  MUNINN_CHECK(IsIntegerType(elem)) << "IntArray of " << MetadataTypeName(elem);
  std::vector<uint8_t> raw;
  raw.reserve(values.size() * MetadataScalarSize(elem));
  for (int64_t v : values) AppendLe(&raw, static_cast<uint64_t>(v), MetadataScalarSize(elem));
  return ScalarArray(elem, std::move(raw));
}

MetadataValue MetadataValue::FloatArray(MetadataType elem, std::span<const double> values) {
  MUNINN_CHECK(IsFloatType(elem)) << "FloatArray of " << MetadataTypeName(elem);
  std::vector<uint8_t> raw;
  raw.reserve(values.size() * MetadataScalarSize(elem));
  for (double v : values) {
    if (elem == MetadataType::kF32) {
      const float f = static_cast<float>(v);
      uint32_t b;
      std::memcpy(&b, &f, 4);
      AppendLe(&raw, b, 4);
    } else {
      uint64_t b;
      std::memcpy(&b, &v, 8);
      AppendLe(&raw, b, 8);
    }
  }
  return ScalarArray(elem, std::move(raw));
}

MetadataValue MetadataValue::BoolArray(std::span<const bool> values) {
  std::vector<uint8_t> raw(values.begin(), values.end());
  return ScalarArray(MetadataType::kBool, std::move(raw));
}

MetadataValue MetadataValue::StringArray(std::vector<std::string> values) {
  MetadataValue m;
  m.type_ = MetadataType::kArray;
  m.elem_type_ = MetadataType::kString;
  m.count_ = values.size();
  m.strings_ = std::move(values);
  return m;
}

MetadataValue MetadataValue::ArrayOfArrays(std::vector<MetadataValue> values) {
  for (const MetadataValue& v : values) MUNINN_CHECK(v.is_array()) << "ArrayOfArrays element";
  MetadataValue m;
  m.type_ = MetadataType::kArray;
  m.elem_type_ = MetadataType::kArray;
  m.count_ = values.size();
  m.arrays_ = std::move(values);
  return m;
}

// ---- inspection ----

std::string MetadataValue::TypeName() const {
  if (!is_array()) return std::string(MetadataTypeName(type_));
  if (elem_type_ == MetadataType::kArray) {
    return "array[" + (arrays_.empty() ? std::string("array") : arrays_[0].TypeName()) + "]";
  }
  return "array[" + std::string(MetadataTypeName(elem_type_)) + "]";
}

std::string MetadataValue::ToString(size_t max_items) const {
  std::ostringstream os;
  if (!is_array()) {
    if (type_ == MetadataType::kString) {
      os << '"' << string_ << '"';
    } else if (type_ == MetadataType::kBool) {
      os << (bits_ ? "true" : "false");
    } else if (IsFloatType(type_)) {
      os << real_;
    } else if (IsSignedType(type_)) {
      os << static_cast<int64_t>(bits_);
    } else {
      os << bits_;
    }
    return os.str();
  }
  os << "[";
  const size_t n = count_ < max_items ? count_ : max_items;
  for (size_t i = 0; i < n; ++i) {
    if (i) os << ", ";
    if (elem_type_ == MetadataType::kString) {
      os << '"' << strings_[i] << '"';
    } else if (elem_type_ == MetadataType::kArray) {
      os << arrays_[i].ToString(max_items);
    } else if (elem_type_ == MetadataType::kBool) {
      os << (raw_[i] ? "true" : "false");
    } else if (IsFloatType(elem_type_)) {
      os << RawFloat(i);
    } else if (IsSignedType(elem_type_)) {
      os << RawInt(i);
    } else {
      os << RawUint(i);
    }
  }
  if (n < count_) os << ", ... (" << count_ << " items)";
  os << "]";
  return os.str();
}

Status MetadataValue::TypeError(std::string_view expected) const {
  return InvalidArgumentError("metadata value is " + TypeName() + ", expected " +
                              std::string(expected));
}

StatusOr<int64_t> MetadataValue::AsInt() const {
  if (!IsIntegerType(type_)) return TypeError("an integer");
  if (type_ == MetadataType::kU64 && bits_ > static_cast<uint64_t>(INT64_MAX)) {
    return InvalidArgumentError("metadata value " + std::to_string(bits_) +
                                " does not fit a signed 64-bit integer");
  }
  return static_cast<int64_t>(bits_);
}

StatusOr<uint64_t> MetadataValue::AsUint() const {
  if (!IsIntegerType(type_)) return TypeError("a non-negative integer");
  if (IsSignedType(type_) && static_cast<int64_t>(bits_) < 0) {
    return InvalidArgumentError("metadata value " + std::to_string(static_cast<int64_t>(bits_)) +
                                " is negative, expected a non-negative integer");
  }
  return bits_;
}

StatusOr<double> MetadataValue::AsFloat() const {
  if (IsFloatType(type_)) return real_;
  if (IsIntegerType(type_)) {
    return IsSignedType(type_) ? static_cast<double>(static_cast<int64_t>(bits_))
                               : static_cast<double>(bits_);
  }
  return TypeError("a number");
}

StatusOr<bool> MetadataValue::AsBool() const {
  if (type_ != MetadataType::kBool) return TypeError("a bool");
  return bits_ != 0;
}

StatusOr<std::string_view> MetadataValue::AsString() const {
  if (type_ != MetadataType::kString) return TypeError("a string");
  return std::string_view(string_);
}

int64_t MetadataValue::RawInt(size_t i) const {
  double unused = 0;
  const size_t size = MetadataScalarSize(elem_type_);
  return static_cast<int64_t>(DecodeBits(elem_type_, raw_.data() + i * size, &unused));
}

uint64_t MetadataValue::RawUint(size_t i) const {
  double unused = 0;
  const size_t size = MetadataScalarSize(elem_type_);
  return DecodeBits(elem_type_, raw_.data() + i * size, &unused);
}

double MetadataValue::RawFloat(size_t i) const {
  double real = 0;
  const size_t size = MetadataScalarSize(elem_type_);
  DecodeBits(elem_type_, raw_.data() + i * size, &real);
  return real;
}

StatusOr<std::vector<int64_t>> MetadataValue::AsIntArray() const {
  if (!is_array() || !IsIntegerType(elem_type_)) return TypeError("an array of integers");
  std::vector<int64_t> out(count_);
  for (size_t i = 0; i < count_; ++i) {
    if (elem_type_ == MetadataType::kU64 && RawUint(i) > static_cast<uint64_t>(INT64_MAX)) {
      return InvalidArgumentError("metadata array element " + std::to_string(i) +
                                  " does not fit a signed 64-bit integer");
    }
    out[i] = RawInt(i);
  }
  return out;
}

StatusOr<std::vector<float>> MetadataValue::AsFloatArray() const {
  if (!is_array() || !(IsFloatType(elem_type_) || IsIntegerType(elem_type_))) {
    return TypeError("an array of numbers");
  }
  std::vector<float> out(count_);
  for (size_t i = 0; i < count_; ++i) {
    if (IsFloatType(elem_type_)) {
      out[i] = static_cast<float>(RawFloat(i));
    } else if (IsSignedType(elem_type_)) {
      out[i] = static_cast<float>(RawInt(i));
    } else {
      out[i] = static_cast<float>(RawUint(i));
    }
  }
  return out;
}

StatusOr<std::span<const std::string>> MetadataValue::AsStringArray() const {
  if (!is_array() || elem_type_ != MetadataType::kString) return TypeError("an array of strings");
  return std::span<const std::string>(strings_);
}

StatusOr<std::span<const MetadataValue>> MetadataValue::AsArrayOfArrays() const {
  if (!is_array() || elem_type_ != MetadataType::kArray) return TypeError("an array of arrays");
  return std::span<const MetadataValue>(arrays_);
}

bool operator==(const MetadataValue& a, const MetadataValue& b) {
  if (a.type_ != b.type_) return false;
  if (!a.is_array()) {
    if (IsFloatType(a.type_)) {
      return std::memcmp(&a.real_, &b.real_, sizeof(double)) == 0;  // NaN-safe, bit-exact
    }
    return a.bits_ == b.bits_ && a.string_ == b.string_;
  }
  return a.elem_type_ == b.elem_type_ && a.count_ == b.count_ && a.raw_ == b.raw_ &&
         a.strings_ == b.strings_ && a.arrays_ == b.arrays_;
}

}  // namespace muninn::model
