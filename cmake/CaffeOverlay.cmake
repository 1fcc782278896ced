# Turns the pristine Caffe tree into our fork, in CAFFE_WORK_DIR:
#   1. a fresh copy of the pristine tree with patches/*.patch applied, redone only
#      when the source or the patch set changes (ccache makes the rebuild cheap);
#   2. our proto messages spliced into caffe.proto (rewritten only if changed);
#   3. our headers, layers and tests symlinked in, so editing one of them
#      recompiles just that file (less npair_overlay_excluded, CMakeLists.txt).

file(GLOB caffe_patches CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/patches/*.patch")
list(SORT caffe_patches)

set(patch_state "${caffe_pristine_dir}")
foreach(p IN LISTS caffe_patches)
  file(SHA256 "${p}" digest)
  string(APPEND patch_state "\n${p} ${digest}")
endforeach()
set(patch_stamp "${CMAKE_BINARY_DIR}/caffe-src.stamp")
if(EXISTS "${patch_stamp}")
  file(READ "${patch_stamp}" previous_patch_state)
endif()

if(NOT patch_state STREQUAL previous_patch_state OR NOT EXISTS "${CAFFE_WORK_DIR}")
  message(STATUS "Preparing the Caffe tree in ${CAFFE_WORK_DIR}")
  file(REMOVE_RECURSE "${CAFFE_WORK_DIR}")
  # cp without -p: every file is newer than any object built from an older tree.
  execute_process(COMMAND cp -R "${caffe_pristine_dir}" "${CAFFE_WORK_DIR}"
                  RESULT_VARIABLE copy_result)
  if(NOT copy_result EQUAL 0)
    message(FATAL_ERROR "Could not copy ${caffe_pristine_dir} to ${CAFFE_WORK_DIR}")
  endif()
  foreach(p IN LISTS caffe_patches)
    get_filename_component(patch_name "${p}" NAME)
    execute_process(COMMAND patch -p1 --forward --batch --input "${p}"
                    WORKING_DIRECTORY "${CAFFE_WORK_DIR}"
                    OUTPUT_VARIABLE patch_out ERROR_VARIABLE patch_out
                    RESULT_VARIABLE patch_result)
    if(NOT patch_result EQUAL 0)
      message(FATAL_ERROR "patches/${patch_name} does not apply to ${caffe_pristine_dir}:\n${patch_out}")
    endif()
    message(STATUS "Applied patches/${patch_name}")
  endforeach()
  file(WRITE "${patch_stamp}" "${patch_state}")
endif()

# The proto: the body of our caffe_npair.LayerParameter placed at the top of
# caffe.LayerParameter, and the messages after it appended to caffe.proto. Each
# field must name one of those messages: a slip is caught here, in our terms,
# rather than by protoc deep inside Caffe's build.
set(npair_proto "${PROJECT_SOURCE_DIR}/proto/npair_loss.proto")
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${npair_proto}")
file(READ "${npair_proto}" npair_proto_text)
string(REGEX MATCH "\nmessage LayerParameter {\n([^}]*)}(.*)" _ "${npair_proto_text}")
set(npair_layer_fields "${CMAKE_MATCH_1}")
set(npair_messages "${CMAKE_MATCH_2}")
string(REGEX MATCHALL "\n *optional [A-Za-z0-9_]+ " npair_field_types "\n${npair_layer_fields}")
if(NOT npair_field_types)
  message(FATAL_ERROR "${npair_proto}: expected a 'message LayerParameter {' holding our optional fields")
endif()
foreach(field IN LISTS npair_field_types)
  string(REGEX REPLACE ".*optional ([A-Za-z0-9_]+) " "\\1" field_type "${field}")
  if(NOT npair_messages MATCHES "\nmessage ${field_type} {")
    message(FATAL_ERROR "${npair_proto}: LayerParameter has a field of type ${field_type}, "
                        "but no 'message ${field_type} {' follows the LayerParameter message")
  endif()
endforeach()

file(READ "${caffe_pristine_dir}/src/caffe/proto/caffe.proto" caffe_proto_text)
string(FIND "${caffe_proto_text}" "\nmessage LayerParameter {\n" layer_at)
if(layer_at EQUAL -1)
  message(FATAL_ERROR "caffe.proto has no 'message LayerParameter {' line to extend")
endif()
string(REPLACE "\nmessage LayerParameter {\n"
               "\nmessage LayerParameter {\n${npair_layer_fields}"
               caffe_proto_text "${caffe_proto_text}")
string(APPEND caffe_proto_text "${npair_messages}")
file(WRITE "${CMAKE_BINARY_DIR}/caffe.proto.new" "${caffe_proto_text}")
file(COPY_FILE "${CMAKE_BINARY_DIR}/caffe.proto.new" "${CAFFE_WORK_DIR}/src/caffe/proto/caffe.proto"
     ONLY_IF_DIFFERENT)

# Our C++ files, linked into the same places in Caffe's tree. New files are
# picked up by a re-configure, which CONFIGURE_DEPENDS triggers by itself.
file(GLOB_RECURSE our_cxx_files CONFIGURE_DEPENDS RELATIVE "${PROJECT_SOURCE_DIR}"
     "${PROJECT_SOURCE_DIR}/include/*.hpp" "${PROJECT_SOURCE_DIR}/src/*.hpp"
     "${PROJECT_SOURCE_DIR}/src/*.inc" "${PROJECT_SOURCE_DIR}/src/*.cuh"
     "${PROJECT_SOURCE_DIR}/src/*.cpp" "${PROJECT_SOURCE_DIR}/src/*.cu")
list(REMOVE_ITEM our_cxx_files ${npair_overlay_excluded})
# Our links are redone each time: a file we removed, or one this build leaves out,
# would leave a link that Caffe's own globs still find.
execute_process(COMMAND find "${CAFFE_WORK_DIR}/include" "${CAFFE_WORK_DIR}/src"
                ( -xtype l -o -lname "${PROJECT_SOURCE_DIR}/*" ) -delete)
foreach(f IN LISTS our_cxx_files)
  set(target "${CAFFE_WORK_DIR}/${f}")
  if(EXISTS "${target}" AND NOT IS_SYMLINK "${target}")
    message(FATAL_ERROR "${f} would replace Caffe's own file of that name; rename ours")
  endif()
  get_filename_component(target_dir "${target}" DIRECTORY)
  file(MAKE_DIRECTORY "${target_dir}")
  file(CREATE_LINK "${PROJECT_SOURCE_DIR}/${f}" "${target}" SYMBOLIC)
endforeach()
