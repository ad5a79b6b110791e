#!/usr/bin/env bash
# Installs the system tools auralm uses when they are missing: espeak-ng, flite, festival and two Festival voices
# (speech synthesis for the synthetic world; flite's awb/slt and festvox-us-slt-hts are deliberately not installed
# nor used: they are the CMU ARCTIC speakers of the real-speech eval), ffmpeg and sox (test fixtures in many
# codecs), chromium (the web page's browser test, driven by Playwright with the system browser). Needs root or
# sudo; otherwise says what to install.
set -euo pipefail
missing=()
for tool in espeak-ng flite festival ffmpeg sox chromium; do command -v "$tool" >/dev/null || missing+=("$tool"); done
# Festival voices have no command of their own: look for their folders.
for voice in kal_diphone:festvox-kallpc16k ked_diphone:festvox-kdlpc16k; do
  [ -d "/usr/share/festival/voices/english/${voice%%:*}" ] || missing+=("${voice##*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
  echo "auralm: please install these system packages: ${missing[*]}" >&2; exit 1; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
