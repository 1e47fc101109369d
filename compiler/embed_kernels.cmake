# Turns the kernel templates (kernels_mlir/*.mlir) and the shared pieces they include
# (kernels_mlir/shared/*.mlir) into C string literals, so the library carries its kernels and
# needs no files at run time. Run by the build: cmake -DOUT=... -DSOURCES=a;b -DPIECES=c;d -P
set(body "/* Generated from kernels_mlir/ by compiler/embed_kernels.cmake; do not edit. */\n")
string(APPEND body "#include \"compiler_internal.h\"\n\n")

# embed(PREFIX FILES TABLE_NAME COUNT_NAME): one string per file and a table {name, source}.
function(embed prefix files table_name count_name)
  set(table "")
  set(count 0)
  foreach(src IN LISTS files)
    get_filename_component(name "${src}" NAME_WE)
    file(READ "${src}" text)
    string(REPLACE "\\" "\\\\" text "${text}")
    string(REPLACE "\"" "\\\"" text "${text}")
    string(REPLACE "\n" "\\n\"\n\"" text "${text}")
    string(APPEND body "static const char ${prefix}_${name}[] =\n\"${text}\";\n\n")
    string(APPEND table "    {\"${name}\", ${prefix}_${name}},\n")
    math(EXPR count "${count} + 1")
  endforeach()
  string(APPEND body "const lhc_template ${table_name}[] = {\n${table}    {0, 0}};\n")
  string(APPEND body "const int ${count_name} = ${count};\n\n")
  set(body "${body}" PARENT_SCOPE)
endfunction()

embed(source "${SOURCES}" lhc_templates lhc_template_total)
embed(piece "${PIECES}" lhc_template_pieces lhc_template_piece_total)
file(WRITE "${OUT}.tmp" "${body}")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
