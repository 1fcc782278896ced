"""Build hooks of the npair-loss package (pyproject.toml): npair_loss/npair_loss_pb2.py is
generated from proto/npair_loss.proto when the wheel is built, by the protoc that
grpcio-tools (a build requirement) carries inside it, so neither a checked-in copy nor a
protoc on the user's PATH is needed. proto/npair_loss.proto here is a link to the
repository's one proto file.

A generated module needs a protobuf runtime at least as new as the protoc that made it
(since protobuf 5.27 it refuses an older one at import). The metadata hook reads that
version from the module's header and requires the runtimes from it up to the next major
version, so pip installs one the module accepts.
"""
import os
import re
import tempfile

from hatchling.builders.hooks.plugin.interface import BuildHookInterface
from hatchling.metadata.plugin.interface import MetadataHookInterface

PROTO_DIR = 'proto'
PROTO = 'npair_loss.proto'
MODULE = 'npair_loss/npair_loss_pb2.py'


def generate(root, out_dir):
    """Compiles the proto into out_dir; returns the path of the generated module."""
    from grpc_tools import protoc

    proto_dir = os.path.join(root, PROTO_DIR)
    status = protoc.main(['protoc', f'--proto_path={proto_dir}', f'--python_out={out_dir}',
                          os.path.join(proto_dir, PROTO)])
    if status != 0:
        raise RuntimeError(f'npair-loss: protoc (grpcio-tools) failed on {PROTO_DIR}/{PROTO} '
                           f'with status {status}')
    return os.path.join(out_dir, PROTO.replace('.proto', '_pb2.py'))


def protobuf_requirement(module_text):
    """The protobuf runtimes that a generated module accepts, from the version it was
    generated for (its header line) to the next major version."""
    m = re.search(r'^# Protobuf Python Version: (\d+)\.(\d+)\.(\d+)', module_text, re.M)
    if m is None:
        raise RuntimeError('npair-loss: the generated npair_loss_pb2 does not say which '
                           'protobuf it was generated for (grpcio-tools too old?)')
    major, minor, patch = (int(v) for v in m.groups())
    return f'protobuf>={major}.{minor}.{patch},<{major + 1}'


class SourcesHook(BuildHookInterface):
    """The wheel gets the generated module; the sdist the proto file itself, in place of
    the link, which would point outside it."""

    def initialize(self, version, build_data):
        if self.target_name == 'sdist':
            proto = os.path.realpath(os.path.join(self.root, PROTO_DIR, PROTO))
            build_data['force_include'][proto] = f'{PROTO_DIR}/{PROTO}'
            return
        self._out = tempfile.TemporaryDirectory()
        build_data['force_include'][generate(self.root, self._out.name)] = MODULE

    def finalize(self, version, build_data, artifact_path):
        if self.target_name != 'sdist':
            self._out.cleanup()


class ProtobufRuntimeHook(MetadataHookInterface):
    """The package's dependencies: the hook's `dependencies`, and protobuf."""

    def update(self, metadata):
        with tempfile.TemporaryDirectory() as out:
            with open(generate(self.root, out), encoding='utf-8') as f:
                runtime = protobuf_requirement(f.read())
        metadata['dependencies'] = list(self.config.get('dependencies', [])) + [runtime]
