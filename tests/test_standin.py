"""The rehearsal's Street View stand-in: it answers like the service, and the real client copes."""

import io

import numpy as np
import pandas as pd
import pytest
import requests
from PIL import Image

from helpers import images, standin, streetview, synthetic


@pytest.fixture(scope="module")
def geography(report_locations, municipalities):
    return synthetic.build_geography(report_locations, municipalities)


@pytest.fixture(scope="module")
def service(geography):
    with standin.serve(geography, faults={}) as (api_root, log):
        yield api_root, log


def test_metadata_answers_like_street_view(service):
    api_root, _ = service
    aarhus = requests.get(f"{api_root}/metadata", params={"location": "56.1572,10.2107", "key": standin.KEY})
    body = aarhus.json()
    assert aarhus.status_code == 200 and body["status"] == "OK"
    assert abs(body["location"]["lat"] - 56.1572) < 0.0005 and abs(body["location"]["lng"] - 10.2107) < 0.0005
    assert body["pano_id"].startswith("standin_") and len(body["date"]) == 7
    denied = requests.get(
        f"{api_root}/metadata", params={"location": "56.1572,10.2107", "key": "wrong"}
    ).json()
    assert denied["status"] == "REQUEST_DENIED"
    # about 3 % of places have no imagery, decided by the place, not by chance per request
    rng = np.random.default_rng(0)
    places = rng.uniform((54.8, 8.2), (57.6, 12.5), (300, 2))
    empty = [standin.panorama_at(lat, lng) is None for lat, lng in places]
    assert 0.005 < np.mean(empty) < 0.08
    lat, lng = places[np.argmax(empty)]
    answer = requests.get(f"{api_root}/metadata", params={"location": f"{lat},{lng}", "key": standin.KEY})
    assert answer.json() == {"status": "ZERO_RESULTS"}


def test_the_image_is_the_scene_of_the_panorama_above_a_logo(service, geography):
    api_root, _ = service
    meta = requests.get(
        f"{api_root}/metadata", params={"location": "55.6761,12.5683", "key": standin.KEY}
    ).json()
    answer = requests.get(api_root, params={"pano": meta["pano_id"], "size": "64x86", "key": standin.KEY})
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "image/jpeg"
    picture = np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGB")).astype(int)
    assert picture.shape == (86, 64, 3)
    pano = standin.panorama_at(55.6761, 12.5683)
    place = pd.DataFrame({"lat": [pano["lat"]], "lng": [pano["lng"]]})
    features = synthetic.scene_features(place["lat"], place["lng"], geography)
    scene = synthetic.render_locations(place, features, np.array([pano["session"]]), 64)[0].astype(int)
    assert np.abs(picture[:64] - scene).mean() < 6  # the scene, up to JPEG
    assert np.abs(picture[64:] - 236).mean() < np.abs(picture[:64] - 236).mean()  # the pale logo band
    refused = requests.get(api_root, params={"pano": meta["pano_id"], "size": "64x86", "key": "wrong"})
    assert refused.status_code == 403


def test_the_real_client_downloads_through_faults_and_duplicates(geography, report_locations, tmp_path):
    chosen = report_locations.groupby("report_cell").head(2)
    chosen = chosen.assign(cell=pd.factorize(chosen["report_cell"])[0])  # cell numbers, as notebook 02 gives
    # two addresses a few metres apart share a panorama: the second is a duplicate
    twin = chosen.iloc[[0]].assign(lat=chosen.iloc[0]["lat"] + 1e-5)
    chosen = pd.concat([chosen, twin], ignore_index=True)[["lat", "lng", "cell"]]
    faults = {"metadata": {5: "500", 9: "429"}, "image": {3: "truncated", 12: "500"}}
    with standin.serve(geography, faults=faults) as (api_root, log):
        counts = streetview.download(
            chosen,
            tmp_path / "streetview",
            key=standin.KEY,
            api_root=api_root,
            size=(48, 48),
            per_second=1000,
            backoff_s=0.05,
            progress=False,
        )
    assert len(log["faults"]) == 4  # every fault was served, and the run still completed
    assert counts["failed"] == 0 and counts["duplicate"] >= 1
    assert counts["downloaded"] + counts["no_imagery"] + counts["duplicate"] == len(chosen)
    dataset, statuses = images.dataset_from_download(tmp_path, "streetview")
    assert len(dataset) == counts["downloaded"] == statuses["ok"]
    assert all((tmp_path / p).exists() for p in dataset["image_path"])
    assert all(Image.open(tmp_path / p).size == (48, 48) for p in dataset["image_path"][:20])
    text = "".join(p.read_text(errors="ignore") for p in (tmp_path / "streetview").rglob("*.csv"))
    assert standin.KEY not in text
