# The command the caffe tool runs, when the environment names no OpenBLAS core, to name
# one for this CPU before it runs again (patches/22-openblas-coretype-from-cpu-flags.patch).
# The build's python, isolated from the user's PYTHONPATH: the script needs only os.
target_compile_definitions(caffe.bin PRIVATE
  "CAFFE_OPENBLAS_CORETYPE_COMMAND=\"'${Python3_EXECUTABLE}' -I '${CAFFE_WORK_DIR}/python/caffe/openblas_coretype.py'\"")
