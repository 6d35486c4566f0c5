# Compiler flags shared by every engramd target (applied through engram_warnings).
add_library(engram_warnings INTERFACE)
target_compile_options(engram_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wno-unused-parameter>)
if(ENGRAM_WERROR)
  target_compile_options(engram_warnings INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-Werror>)
endif()

# Kernels are built for the machine's ISA family: AVX2/FMA code paths are compiled into
# their own functions (target attributes) and chosen at run time, so the binary still runs
# on CPUs without AVX2.
if(ENGRAM_SANITIZE)
  add_compile_options(-fsanitize=${ENGRAM_SANITIZE} -fno-omit-frame-pointer)
  add_link_options(-fsanitize=${ENGRAM_SANITIZE})
endif()
