#!/bin/sh
# Gather the negative photos the not-a-lesion gate is fitted on (none of them are kept in the project):
#     sh training/gather_gate_negatives.sh [/tmp/gate/neg]
# then `python -m training.fit_gate --negatives DIR/* ...` (the README gives the whole command).
# Sources: Debian packages (clip art, stamps, wallpapers, OpenCV's documentation photos and figures) and
# the sample images inside PyPI wheels (scikit-image, insightface, matplotlib, scikit-learn); needs apt
# and pip to reach their registries. The folder below DIR names each category.
set -eu
N=${1:-/tmp/gate/neg}
PY=${PYTHON:-.venv/bin/python}
SP=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    openclipart-png tuxpaint-stamps-default gnome-backgrounds mate-backgrounds ukui-wallpapers lomiri-wallpapers >/dev/null
(cd "$TMP" && apt-get download opencv-doc >/dev/null && dpkg-deb -x opencv-doc_*.deb ocv)
"$PY" -m pip download --no-deps -q -d "$TMP" scikit-image insightface

mkdir -p "$N"/packages/skimage "$N"/packages/matplotlib "$N"/packages/sklearn "$N"/faces/insightface \
    "$N"/faces/portraits "$N"/wallpapers/photos "$N"/opencv/photos "$N"/opencv/figures
"$PY" - "$TMP" "$N" <<'PY'
import glob, sys, zipfile
tmp, out = sys.argv[1], sys.argv[2]
for wheel, prefix, dest in (("scikit_image-*.whl", "skimage/data/", "packages/skimage"),
                            ("insightface-*.whl", "insightface/data/images/", "faces/insightface")):
    with zipfile.ZipFile(glob.glob(f"{tmp}/{wheel}")[0]) as z:
        for n in z.namelist():
            if n.startswith(prefix) and n.lower().endswith((".png", ".jpg", ".tif")):
                open(f"{out}/{dest}/{n.rsplit('/', 1)[-1]}", "wb").write(z.read(n))
PY
cp "$SP"/matplotlib/mpl-data/sample_data/*.png "$SP"/matplotlib/mpl-data/sample_data/*.jpg "$N"/packages/matplotlib/
cp "$SP"/sklearn/datasets/images/*.jpg "$N"/packages/sklearn/
cp -r /usr/share/backgrounds/gnome /usr/share/backgrounds/mate "$N"/wallpapers/
find /usr/share/backgrounds -maxdepth 1 -type f -exec cp {} "$N"/wallpapers/photos/ \;
O="$TMP"/ocv/usr/share/doc/opencv-doc
find "$O"/opencv4/html -maxdepth 1 -iname '*.jpg' -exec cp {} "$N"/opencv/photos/ \;
find "$O"/examples -iname '*.jpg' -exec cp -n {} "$N"/opencv/photos/ \;
find "$O"/opencv4/html -maxdepth 1 -iname '*.png' -exec cp {} "$N"/opencv/figures/ \;
# photos of people: their own category (and not twice)
mv "$N"/packages/matplotlib/grace_hopper.jpg "$N"/packages/skimage/astronaut.png "$N"/faces/portraits/
for f in messi5 facereg face_swapped person_multi_det julia_facedetect_sample messi_face; do
    mv "$N"/opencv/photos/$f.jpg "$N"/faces/portraits/
done
rm -f "$N"/opencv/photos/messipyr.jpg "$N"/opencv/photos/messiup.jpg
mkdir -p "$N"/app_screenshots/docs
cp docs/screenshots/*.png "$N"/app_screenshots/docs/ 2>/dev/null || true
ln -sfn /usr/share/tuxpaint/stamps "$N"/tuxpaint
ln -sfn /usr/share/openclipart/png "$N"/openclipart
for d in "$N"/*; do echo "$d: $(find -L "$d" -type f | wc -l) files"; done
