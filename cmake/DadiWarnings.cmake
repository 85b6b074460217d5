# Compiler flags shared by every target of ours. Generated code and third-party headers are
# included as SYSTEM so that their warnings do not fail our build.
add_compile_options(-Wall -Wextra -Wpedantic -Wnon-virtual-dtor -Wno-missing-field-initializers
                    $<$<CXX_COMPILER_ID:GNU>:-Wshadow=local>)
if(DADI_WERROR)
  add_compile_options(-Werror)
endif()

if(DADI_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=undefined
                      -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()

if(DADI_FUZZ)
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()
