# Warning flags and sanitizers shared by every muninn target.
add_library(muninn_flags INTERFACE)
target_compile_options(muninn_flags INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow=local -Wno-unused-parameter>)
if(MUNINN_WERROR)
  target_compile_options(muninn_flags INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-Werror>)
endif()
if(MUNINN_SANITIZE)
  # GCC 12's -Wmaybe-uninitialized gives false positives inside instrumented inline code (e.g.
  # Boost.Beast's parser, boost::optional), so it is not an error in sanitizer builds.
  target_compile_options(muninn_flags INTERFACE
    $<$<COMPILE_LANGUAGE:CXX>:-fsanitize=${MUNINN_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=all
                              -Wno-maybe-uninitialized>)
  target_link_options(muninn_flags INTERFACE -fsanitize=${MUNINN_SANITIZE})
endif()

# muninn_add_isa_sources(target ISA files...): compiles `files` with the instruction-set flags for
# ISA (avx2 or avx512). The code in those files is only called after a CPUID check
# (core/include/muninn/core/cpu_features.h), so the rest of the binary stays baseline x86-64.
function(muninn_add_isa_sources target isa)
  if(isa STREQUAL "avx2")
    set(_flags -mavx2 -mfma -mf16c -mbmi2)
  elseif(isa STREQUAL "avx512")
    set(_flags -mavx2 -mfma -mf16c -mbmi2 -mavx512f -mavx512bw -mavx512vl -mavx512dq)
  else()
    message(FATAL_ERROR "unknown ISA ${isa}")
  endif()
  target_sources(${target} PRIVATE ${ARGN})
  set_source_files_properties(${ARGN} TARGET_DIRECTORY ${target} PROPERTIES COMPILE_OPTIONS "${_flags}")
endfunction()
