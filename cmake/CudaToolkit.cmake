# CAFFE_NPAIR_CUDA=ON: Caffe's own CUDA build (FindCUDA, cuda_compile) set up for
# the installed CUDA toolkit (CUDA 13 tested; patches/1*-cuda13-*.patch make
# Caffe's sources and cmake/Cuda.cmake build with it).
#
#   CAFFE_NPAIR_CUDA_ARCH  compute capabilities to build machine code for
#                          ("80 90": A100, H100); PTX of the highest is embedded
#                          too, so newer GPUs can run it after a JIT compile.
#   CUDA_TOOLKIT_ROOT_DIR  the toolkit (default: the nvcc on PATH, else /usr/local/cuda).
#   CAFFE_NPAIR_NCCL       multi-GPU training through NCCL (default ON): Caffe's
#                          USE_NCCL, what `caffe train -gpu all` and pycaffe's
#                          caffe.NCCL need. NCCL is looked for in the toolkit
#                          first (some toolkits ship it), then under $NCCL_DIR
#                          and the system's paths (Debian: libnccl-dev).
#
# cuDNN stays off: Caffe's cuDNN layers use the cuDNN 7 API, which cuDNN 9 removed.

find_program(CAFFE_NPAIR_NVCC nvcc HINTS "${CUDA_TOOLKIT_ROOT_DIR}/bin" /usr/local/cuda/bin)
if(NOT CAFFE_NPAIR_NVCC)
  message(FATAL_ERROR "CAFFE_NPAIR_CUDA=ON but no nvcc was found: put the CUDA toolkit's "
                      "bin/ on PATH or pass -DCUDA_TOOLKIT_ROOT_DIR=/path/to/cuda")
endif()
if(NOT CUDA_TOOLKIT_ROOT_DIR)
  get_filename_component(cuda_bin_dir "${CAFFE_NPAIR_NVCC}" DIRECTORY)
  get_filename_component(cuda_root "${cuda_bin_dir}" DIRECTORY)
  set(CUDA_TOOLKIT_ROOT_DIR "${cuda_root}" CACHE PATH "The CUDA toolkit" FORCE)
endif()

string(REGEX MATCHALL "[0-9]+" cuda_archs "${CAFFE_NPAIR_CUDA_ARCH}")
if(NOT cuda_archs)
  message(FATAL_ERROR "CAFFE_NPAIR_CUDA_ARCH='${CAFFE_NPAIR_CUDA_ARCH}' names no compute capability")
endif()
list(SORT cuda_archs COMPARE NATURAL)
list(GET cuda_archs -1 cuda_ptx_arch)

set(CPU_ONLY OFF CACHE BOOL "" FORCE)
set(CUDA_ARCH_NAME "Manual" CACHE STRING "" FORCE)
set(CUDA_ARCH_BIN "${CAFFE_NPAIR_CUDA_ARCH}" CACHE STRING "" FORCE)
set(CUDA_ARCH_PTX "${cuda_ptx_arch}" CACHE STRING "" FORCE)
message(STATUS "caffe-npair: CUDA build with ${CAFFE_NPAIR_NVCC}, sm ${CAFFE_NPAIR_CUDA_ARCH}, PTX ${cuda_ptx_arch}")

option(CAFFE_NPAIR_NCCL "With CAFFE_NPAIR_CUDA: multi-GPU training through NCCL" ON)
if(CAFFE_NPAIR_NCCL)
  # Caffe's FindNCCL keeps what these find (same cache variables), and only
  # knows /usr and /usr/local by itself.
  find_path(NCCL_INCLUDE_DIR nccl.h
            HINTS "${CUDA_TOOLKIT_ROOT_DIR}/include" "$ENV{NCCL_DIR}/include")
  find_library(NCCL_LIBRARIES nccl
               HINTS "${CUDA_TOOLKIT_ROOT_DIR}/lib64" "${CUDA_TOOLKIT_ROOT_DIR}/lib"
                     "$ENV{NCCL_DIR}/lib" "$ENV{NCCL_DIR}/lib64")
  if(NOT NCCL_INCLUDE_DIR OR NOT NCCL_LIBRARIES)
    message(FATAL_ERROR "CAFFE_NPAIR_CUDA=ON builds multi-GPU training with NCCL, but no "
                        "nccl.h and libnccl were found in ${CUDA_TOOLKIT_ROOT_DIR}, $NCCL_DIR "
                        "or the system's paths: install NCCL (Debian: libnccl-dev), set "
                        "NCCL_DIR to where it is, or pass -DCAFFE_NPAIR_NCCL=OFF for a "
                        "single-GPU build")
  endif()
  set(USE_NCCL ON CACHE BOOL "" FORCE)
  message(STATUS "caffe-npair: NCCL ${NCCL_LIBRARIES} (multi-GPU training)")
else()
  set(USE_NCCL OFF CACHE BOOL "" FORCE)
endif()
