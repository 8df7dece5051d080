#!/usr/bin/env bash
# Export keypoints/descriptors on HPatches, then evaluate them (repeatability, homography estimation).
#
#   ./run_export.sh [config] [export folder] [extra export.py arguments ...]
#
# Defaults: configs/magicpoint_repeatability_heatmap.yaml, superpoint_hpatches_test.
# Without the HPatches download:  ./run_export.sh configs/magicpoint_repeatability_embedded.yaml
# PYTHON selects the interpreter (default: python). Results go to EXPER_PATH/<folder> (logs/ by default).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python}"
CONFIG="${1:-$REPO/configs/magicpoint_repeatability_heatmap.yaml}"
FOLDER="${2:-superpoint_hpatches_test}"
shift $(( $# < 2 ? $# : 2 ))

"$PYTHON" "$REPO/export.py" export_descriptor "$CONFIG" "$FOLDER" "$@"
EXPER_PATH="$(cd "$REPO" && "$PYTHON" -c 'import settings; print(settings.exper_path())')"
"$PYTHON" "$REPO/evaluation.py" "$EXPER_PATH/$FOLDER/predictions" --repeatibility --homography
