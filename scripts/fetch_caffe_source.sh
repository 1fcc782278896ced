#!/usr/bin/env bash
# Fetch Debian's source package `caffe` from bullseye (BVLC Caffe at git 99bd997
# plus Debian's patches) and unpack it into DEST.
#
# The archive is the one that the running machine's apt sources already use: its
# URI is read from them, never written here. apt runs with a private source list
# and state directory, so the machine's apt configuration is left untouched.
set -euo pipefail

dest=${1:?usage: fetch_caffe_source.sh DEST}
[[ -f $dest/CMakeLists.txt ]] && exit 0

die() { echo "fetch_caffe_source: $*" >&2; exit 1; }
command -v apt-get >/dev/null || die "apt-get not found; set CAFFE_SOURCE_DIR to a Caffe checkout instead"
command -v dpkg-source >/dev/null || die "dpkg-source not found (apt-get install dpkg-dev)"

debian_archive_uri() {
  local f
  # deb822 files: the URIs of a stanza whose suites are not the security suites.
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    awk '/^URIs:/ {uri = $2} /^Suites:/ && !/security/ && uri {print uri; exit}' "$f"
  done
  # One-line format: "deb [options] URI suite component...".
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    sed -E 's/\[[^]]*\]//' "$f" | awk '$1 == "deb" && $3 !~ /security/ {print $2; exit}'
  done
}
uri=$(debian_archive_uri | head -n1)
[[ -n $uri ]] || die "no Debian archive found in this machine's apt sources; set CAFFE_SOURCE_DIR"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/archives/partial"
cat >"$work/caffe-src.sources" <<SOURCES
Types: deb-src
URIs: $uri
Suites: bullseye
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES

apt_opts=(-o "Dir::Etc::SourceList=$work/caffe-src.sources" -o "Dir::Etc::SourceParts=-"
          -o "Dir::State::Lists=$work/lists" -o "Dir::Cache::Archives=$work/archives"
          -o "APT::Sandbox::User=root")
echo "fetch_caffe_source: fetching Debian's caffe source (bullseye) into $dest"
apt-get "${apt_opts[@]}" -qq update
(cd "$work" && apt-get "${apt_opts[@]}" -qq source --download-only caffe)
dpkg-source --no-check -x "$work"/caffe_*.dsc "$work/unpacked" >/dev/null
mkdir -p "$(dirname "$dest")"
rm -rf "$dest"
mv "$work/unpacked" "$dest"
