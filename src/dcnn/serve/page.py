"""The page `GET /` serves: drop or pick a photo, see the top-5 classes and a Grad-CAM heat map.

One self-contained document (HTML, CSS and JavaScript inline, nothing fetched from elsewhere).
Its Content-Security-Policy allows exactly this script and this style sheet (by their SHA-256),
images from data: and blob: URLs, and requests to this server only, so the browser itself refuses
any other resource. Class names are inserted as text, never as HTML.
"""

from __future__ import annotations

import base64
import hashlib

STYLE = """
:root { color-scheme: light dark; --accent: #2f6fdf; }
body { font: 16px/1.4 system-ui, sans-serif; margin: 0; }
main { max-width: 46rem; margin: 2rem auto; padding: 0 1rem; }
h1 { font-size: 1.4rem; }
#model { font-weight: normal; opacity: 0.7; }
#drop { display: block; border: 2px dashed #8888; border-radius: 0.6rem; padding: 2.5rem 1rem;
        text-align: center; cursor: pointer; }
#drop.over { border-color: var(--accent); background: #2f6fdf18; }
#file { display: block; margin: 0.8rem auto 0; }
#status { min-height: 1.4em; }
#status.error { color: #d33; }
#result { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
figure { margin: 0; }
figure img { width: 100%; aspect-ratio: 1; object-fit: contain; background: #8882; border-radius: 0.4rem; }
figcaption { font-size: 0.85rem; opacity: 0.8; }
#top { grid-column: 1 / -1; list-style: none; padding: 0; margin: 0; }
#top li { display: grid; grid-template-columns: 10rem 1fr 4rem; gap: 0.6rem; align-items: center;
          margin: 0.3rem 0; }
.name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.bar { height: 0.9rem; background: #8883; border-radius: 0.45rem; overflow: hidden; }
.fill { height: 100%; background: var(--accent); }
.p { text-align: right; font-variant-numeric: tabular-nums; }
"""

SCRIPT = """
"use strict";
const $ = (id) => document.getElementById(id);
let photoUrl = null;

function say(text, isError) {
  $("status").textContent = text;
  $("status").classList.toggle("error", Boolean(isError));
}

function show(answer) {
  const list = $("top");
  list.replaceChildren();
  for (const entry of answer.top) {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = entry.name;
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.display = "block";
    fill.style.width = (100 * entry.probability).toFixed(1) + "%";
    bar.append(fill);
    const p = document.createElement("span");
    p.className = "p";
    p.textContent = (100 * entry.probability).toFixed(1) + "%";
    item.append(name, bar, p);
    list.append(item);
  }
  $("heat-class").textContent = answer.top[0].name;
  $("heatmap").src = answer.gradcam;
  $("result").hidden = false;
  say(answer.model + ": " + answer.top[0].name);
}

async function classify(file) {
  if (!file) return;
  if (photoUrl) URL.revokeObjectURL(photoUrl);
  photoUrl = URL.createObjectURL(file);
  $("photo").src = photoUrl;
  say("classifying " + file.name + "\\u2026");
  const body = new FormData();
  body.append("file", file);
  try {
    const response = await fetch("predict?top=5&gradcam=true", { method: "POST", body });
    const answer = await response.json();
    if (!response.ok) {
      $("result").hidden = true;
      say(answer.error || "error " + response.status, true);
      return;
    }
    show(answer);
  } catch (error) {
    say("the server did not answer: " + error, true);
  }
}

$("file").addEventListener("change", () => classify($("file").files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  classify(event.dataTransfer.files[0]);
});
fetch("health").then((r) => r.json()).then((h) => { $("model").textContent = h.model; }).catch(() => {});
"""

PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>dcnn: classify a photo</title>
<style>{STYLE}</style>
</head>
<body>
<main>
<h1>dcnn <span id="model"></span></h1>
<label id="drop">Drop a photo here, or pick one
  <input id="file" type="file" accept="image/*">
</label>
<p id="status" role="status"></p>
<section id="result" hidden>
  <figure><img id="photo" alt="the photo"><figcaption>the photo</figcaption></figure>
  <figure><img id="heatmap" alt="Grad-CAM heat map">
    <figcaption>Grad-CAM for <b id="heat-class"></b>, over the part of the photo the model reads</figcaption></figure>
  <ol id="top"></ol>
</section>
</main>
<script>{SCRIPT}</script>
</body>
</html>
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src {_sha256(SCRIPT)}; style-src {_sha256(STYLE)}; img-src data: blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
