"""The JSON API of a real `dcnn serve` process: predictions as `dcnn predict` makes them, Grad-CAM,
health, the OpenAPI schema, every bad upload answered with a 4xx and one line of JSON, batching
under concurrent load."""

from __future__ import annotations

import asyncio
import base64
import io
import os
from concurrent.futures import ThreadPoolExecutor
from unittest import mock

import httpx
import numpy as np
import pytest
from PIL import Image

from dcnn.data.images import open_image
from dcnn.evaluate.run import model_file_of, predict_files, preprocess_of
from dcnn.models.modelfile import load_model_file
from dcnn.serve.app import create_app
from dcnn.visualize.attribution import grad_cam, overlay_heatmap
from tests.conftest import data_dir
from tests.serve.conftest import (
    BATCH_WINDOW_MS,
    MAX_BATCH,
    MAX_PIXELS,
    MAX_UPLOAD_MB,
    encoded,
    png_declaring,
)

CHELSEA = data_dir() / "images" / "chelsea.png"
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def upload(data: bytes, name: str = "photo.png", content_type: str = "image/png") -> dict:
    return {"files": {"file": (name, data, content_type)}}


def test_probabilities_are_those_of_dcnn_predict_whatever_the_name_and_type(server):
    [(_, ranked)], failures = predict_files(server.run, [CHELSEA], top=10, device="cpu")
    assert not failures
    with server.client() as client:  # content sniffed: a PNG sent as a text file is still a PNG
        answer = client.post("/predict", params={"top": 10}, **upload(CHELSEA.read_bytes(), "notes.txt",
                                                                       "text/plain")).json()
        three = client.post("/predict", params={"top": 3}, **upload(CHELSEA.read_bytes())).json()
        clamped = client.post("/predict", params={"top": 50}, **upload(CHELSEA.read_bytes())).json()
    assert (answer["model"], answer["batch_size"], answer["gradcam"]) == ("resnet20", 1, None)
    assert [entry["name"] for entry in answer["top"]] == [name for name, _ in ranked]
    assert [entry["probability"] for entry in answer["top"]] == pytest.approx([p for _, p in ranked], rel=1e-6)
    assert sum(entry["probability"] for entry in answer["top"]) == pytest.approx(1.0, abs=1e-5)
    assert three["top"] == answer["top"][:3] and clamped["top"] == answer["top"]


def test_gradcam_is_the_overlay_of_the_top_class_on_what_the_model_saw(server):
    with server.client() as client:
        answer = client.post("/predict", params={"gradcam": "true"}, **upload(CHELSEA.read_bytes())).json()
    header, _, payload = answer["gradcam"].partition(",")
    assert header == "data:image/png;base64"
    served = np.asarray(Image.open(io.BytesIO(base64.b64decode(payload))), dtype=np.int16)

    model, meta = load_model_file(model_file_of(server.run))  # independently, in this process
    prep = preprocess_of(meta)
    pixels = prep.pixels(open_image(CHELSEA))
    inputs = prep.normalize(pixels[None])
    assert CIFAR_CLASSES[int(model(inputs).argmax())] == answer["top"][0]["name"]
    expected = np.asarray(overlay_heatmap(pixels, grad_cam(model, inputs)[0]), dtype=np.int16)
    assert served.shape == expected.shape == (32, 32, 3)
    assert np.abs(served - expected).max() <= 1  # PNG is lossless; float rounding may move a level
    plain = np.round(pixels.permute(1, 2, 0).numpy() * 255)
    assert np.abs(served - plain).mean() > 10  # the heat map is drawn over the image


def test_health_and_openapi_describe_the_service_and_its_limits(server):
    health = server.health()
    assert {k: health[k] for k in ("status", "model", "device", "input_size", "classes")} == {
        "status": "ok", "model": "resnet20", "device": "cpu", "input_size": [3, 32, 32], "classes": CIFAR_CLASSES}
    assert (health["max_upload_bytes"], health["max_pixels"], health["max_batch"], health["batch_window_ms"]) == (
        MAX_UPLOAD_MB * 2**20, MAX_PIXELS, MAX_BATCH, BATCH_WINDOW_MS)

    with server.client() as client:
        schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]

    def resolve(node: dict) -> dict:
        return components[node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else node

    predict = schema["paths"]["/predict"]["post"]
    form = resolve(predict["requestBody"]["content"]["multipart/form-data"]["schema"])
    assert form["required"] == ["file"]
    assert {p["name"] for p in predict["parameters"]} == {"top", "gradcam"}
    refs = {code: r["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
            for code, r in predict["responses"].items()}
    assert refs == {"200": "Prediction", "400": "ErrorMessage", "413": "ErrorMessage", "415": "ErrorMessage",
                    "422": "ErrorMessage"}
    assert set(components["Prediction"]["required"]) == {"model", "top", "batch_size"}
    assert components["ErrorMessage"]["required"] == ["error"]
    health_schema = schema["paths"]["/health"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert resolve(health_schema)["title"] == "Health"


def _chunks(total: int):
    yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'
    for _ in range(total // 65536):
        yield os.urandom(65536)


BIG = MAX_UPLOAD_MB * 2**20 + 4096
HALF_CHELSEA = CHELSEA.read_bytes()[: CHELSEA.stat().st_size // 2]
TIFF = encoded(Image.new("RGB", (8, 8)), "TIFF")
BAD_REQUESTS = {  # name: (method, path, request options, status, a fragment of the error)
    "empty": ("POST", "/predict", upload(b""), 400, "empty (0 bytes)"),
    "truncated": ("POST", "/predict", upload(HALF_CHELSEA), 400, "truncated or corrupt"),
    "not an image": ("POST", "/predict", upload(b"just some text\n" * 20), 415, "not a JPEG, PNG"),
    "TIFF named .jpg": ("POST", "/predict", upload(TIFF, "photo.jpg", "image/jpeg"), 415, "content was checked"),
    "too many bytes": ("POST", "/predict", upload(os.urandom(BIG)), 413, "upload limit of 1,048,576 bytes"),
    "too many bytes, chunked": ("POST", "/predict", {"content": _chunks(BIG + 65536),
                                                     "headers": {"content-type": "multipart/form-data; boundary=x"}},
                                413, "upload limit"),
    "decompression bomb": ("POST", "/predict", upload(png_declaring(3000, 3000)), 413,
                           "9,000,000 pixels, over this server's limit of 4,000,000"),
    "wrong field": ("POST", "/predict", {"files": {"image": ("photo.png", HALF_CHELSEA)}}, 422, "field 'file'"),
    "no file": ("POST", "/predict", {}, 422, "body file: Field required"),
    "text in the file field": ("POST", "/predict", {"data": {"file": "photo.png"}}, 422, "Expected UploadFile"),
    "top 0": ("POST", "/predict?top=0", upload(CHELSEA.read_bytes()), 422, "query top"),
    "top not a number": ("POST", "/predict?top=five", upload(CHELSEA.read_bytes()), 422, "query top"),
    "gradcam not a boolean": ("POST", "/predict?gradcam=maybe", upload(CHELSEA.read_bytes()), 422, "query gradcam"),
    "GET /predict": ("GET", "/predict", {}, 405, "Method Not Allowed"),
    "unknown path": ("GET", "/nowhere", {}, 404, "Not Found"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_a_bad_request_gets_a_4xx_with_one_line_of_json_and_the_server_goes_on(server, case):
    method, path, options, status, fragment = BAD_REQUESTS[case]
    with server.client() as client:
        response = client.request(method, path, **options)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"] and "\n" not in body["error"] and fragment in body["error"], body
    assert server.health()["status"] == "ok"


def test_an_internal_error_is_a_500_with_one_line_of_json_and_the_next_request_is_served(served_run):
    app = create_app(served_run, device="cpu")  # in this process, to break its model
    model = app.state.classifier.model

    async def two_requests() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
            with mock.patch.object(model, "forward", side_effect=RuntimeError("CUDA out of memory")):
                broken = await client.post("/predict", **upload(CHELSEA.read_bytes()))
            return broken, await client.post("/predict", **upload(CHELSEA.read_bytes()))

    broken, served = asyncio.run(two_requests())
    assert broken.status_code == 500
    assert broken.json() == {"error": "internal error (RuntimeError); the server's log has the details."}
    assert served.status_code == 200 and served.json()["model"] == "resnet20"


def test_500_concurrent_requests_from_16_clients_are_batched_without_errors(server):
    cifar = sorted((data_dir() / "cifar10-jpeg" / "test" / "cat").iterdir())[:8]
    photos = [path.read_bytes() for path in cifar]
    with server.client() as client:  # each photo alone first: the answers batching must not change
        alone = [client.post("/predict", **upload(photo, "cat.jpg", "image/jpeg")).json() for photo in photos]
    before = server.health()

    def client_requests(first: int) -> list[tuple[int, int, dict]]:
        with server.client() as client:
            return [(i, (r := client.post("/predict", **upload(photos[i % 8], "cat.jpg", "image/jpeg"))).status_code,
                     r.json()) for i in range(first, 500, 16)]

    with ThreadPoolExecutor(16) as pool:
        results = [result for chunk in pool.map(client_requests, range(16)) for result in chunk]
    after = server.health()

    assert len(results) == 500 and {status for _, status, _ in results} == {200}
    for i, _, answer in results:  # every answer is its own photo's, whatever it was batched with
        expected = alone[i % 8]["top"]
        assert [e["name"] for e in answer["top"]] == [e["name"] for e in expected]
        assert [e["probability"] for e in answer["top"]] == pytest.approx(
            [e["probability"] for e in expected], abs=1e-5)
    batch_sizes = [answer["batch_size"] for _, _, answer in results]
    assert after["images"] - before["images"] == 500
    assert 500 / (after["batches"] - before["batches"]) > 1.5  # the mean batch: requests were batched
    assert max(batch_sizes) <= MAX_BATCH and after["largest_batch"] <= MAX_BATCH
