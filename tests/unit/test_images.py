"""Image decoding, data URIs, the SSRF address policy, and the safe fetcher against a real local HTTP server."""

from __future__ import annotations

import asyncio
import base64
import gzip
import http.server
import ipaddress
import socket
import threading
import time
import zlib
from collections.abc import Iterator

import pytest
from PIL import Image

from faisca.errors import InvalidRequest
from faisca.images import AddressPolicy, ImageError, ImageLimits, ImageLoader, SafeFetcher, decode_image
from faisca.images.coding import BoundedDecoder, content_coding
from faisca.images.fetch import FetchLimits
from faisca.images.loader import data_uri_bytes
from tests.pictures import encoded, png_claiming

MAX_PIXELS = 4096 * 4096


# --- decoding


@pytest.mark.parametrize("format", ["PNG", "JPEG", "WEBP", "GIF"])
def test_each_accepted_format_decodes_to_rgb(format: str) -> None:
    image = decode_image(encoded(Image.new("RGB", (30, 20), (200, 10, 10)), format), max_pixels=MAX_PIXELS)
    assert (image.width, image.height) == (30, 20)
    assert len(image.rgb) == 30 * 20 * 3
    red, green, blue = image.rgb[:3]
    assert red > 150 and green < 60 and blue < 60


def test_transparent_pixels_become_white() -> None:
    image = decode_image(encoded(Image.new("RGBA", (4, 4), (255, 0, 0, 0)), "PNG"), max_pixels=MAX_PIXELS)
    assert image.rgb[:3] == b"\xff\xff\xff"


def test_the_digest_is_of_the_pixels_not_the_encoding() -> None:
    picture = Image.new("RGB", (16, 16), (1, 2, 3))
    as_png = decode_image(encoded(picture, "PNG"), max_pixels=MAX_PIXELS)
    as_lossless_webp = decode_image(encoded(picture, "WEBP", lossless=True), max_pixels=MAX_PIXELS)
    other = decode_image(encoded(Image.new("RGB", (16, 16), (1, 2, 4)), "PNG"), max_pixels=MAX_PIXELS)
    assert as_png.digest == as_lossless_webp.digest != other.digest


@pytest.mark.parametrize("data, why", [
    (b"", "empty"),
    (b"hello, I am text", "not an image"),
    (encoded(Image.new("RGB", (8, 8)), "BMP"), "not an image"),  # a real image, but not a format taken
    (encoded(Image.new("RGB", (64, 64)), "PNG")[:60], "cannot be read|damaged"),
])
def test_what_is_not_a_usable_image_is_refused(data: bytes, why: str) -> None:
    with pytest.raises(ImageError, match=why):
        decode_image(data, max_pixels=MAX_PIXELS)


@pytest.mark.parametrize("size", [(20000, 20000), (5000, 5000)])
def test_too_many_pixels_are_refused_from_the_header(size: tuple[int, int]) -> None:
    started_s = time.perf_counter()
    with pytest.raises(ImageError, match="pixels"):
        decode_image(png_claiming(*size), max_pixels=MAX_PIXELS)
    assert time.perf_counter() - started_s < 1  # nothing was decoded


# --- data URIs


def test_data_uris_are_base64_decoded_whatever_their_media_type() -> None:
    assert data_uri_bytes("data:image/png;base64,aGk=", max_bytes=100) == b"hi"
    assert data_uri_bytes("data:;base64,aG\nk=", max_bytes=100) == b"hi"


@pytest.mark.parametrize("uri, why", [
    ("data:image/png,hi", "base64-encoded"),
    ("data:image/png;base64,!!!!", "not valid base64"),
    ("data:image/png;base64," + "A" * 400, "larger than 100 bytes"),
])
def test_bad_data_uris_are_refused(uri: str, why: str) -> None:
    with pytest.raises(ImageError, match=why):
        data_uri_bytes(uri, max_bytes=100)


# --- the address policy


@pytest.mark.parametrize("address, kind", [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"), ("172.16.0.1", "private"),
    ("192.168.1.1", "private"), ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("0.0.0.0", "unspecified"), ("fc00::1", "private"),
    ("::ffff:127.0.0.1", "loopback"), ("64:ff9b::a00:1", "private"), ("100.64.0.1", "not a public"),
    ("240.0.0.1", "reserved"),
])
def test_addresses_that_are_not_public_are_refused(address: str, kind: str) -> None:
    refusal = AddressPolicy().refusal(ipaddress.ip_address(address))
    assert refusal is not None and kind in refusal


@pytest.mark.parametrize("address", ["8.8.8.8", "151.101.1.69", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert AddressPolicy().refusal(ipaddress.ip_address(address)) is None


def test_allowed_networks_open_a_hole_and_only_that() -> None:
    policy = AddressPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),))
    assert policy.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("127.0.0.2")) is not None


# --- fetching, from a real server on loopback (let through by the test's policy)

PNG = encoded(Image.new("RGB", (10, 10), (0, 128, 255)), "PNG")
ZEROS_GZIPPED = gzip.compress(bytes(10 * 1024 * 1024))  # ~10 KB that expand to 10 MiB


class _Handler(http.server.BaseHTTPRequestHandler):
    hosts_seen: list[str] = []
    accept_encodings_seen: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        _Handler.hosts_seen.append(self.headers.get("Host", ""))
        _Handler.accept_encodings_seen.append(self.headers.get("Accept-Encoding", ""))
        port = self.server.server_address[1]
        routes = {
            "/image.png": (200, {"Content-Type": "text/html"}, PNG),  # the header lies; the bytes decide
            "/to-image": (302, {"Location": "/image.png"}, b""),
            "/to-private": (302, {"Location": f"http://127.0.0.2:{port}/image.png"}, b""),
            "/loop": (302, {"Location": "/loop"}, b""),
            "/missing": (404, {}, b"no"),
            "/huge": (200, {}, b"\0" * 5000),
            "/gzip": (200, {"Content-Encoding": "gzip"}, gzip.compress(PNG)),
            "/deflate": (200, {"Content-Encoding": "deflate"}, zlib.compress(PNG)),
            "/gzip-bomb": (200, {"Content-Encoding": "gzip"}, ZEROS_GZIPPED),
            "/gzip-gzip": (200, {"Content-Encoding": "gzip, gzip"}, gzip.compress(ZEROS_GZIPPED)),
            "/br": (200, {"Content-Encoding": "br"}, b"\x0b\x02\x80hello\x03"),
        }
        if self.path == "/slow":
            time.sleep(1.0)
        status, headers, body = routes.get(self.path, (200, {}, PNG))
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if self.path != "/huge":  # no Content-Length: the cap must hold while reading
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (the timeout test)
            pass


@pytest.fixture(scope="module")
def image_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


LOOPBACK_ONLY = AddressPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),))


def fetch(url: str, **limits: float) -> bytes:
    async def run() -> bytes:
        fetcher = SafeFetcher(FetchLimits(**limits), policy=LOOPBACK_ONLY)  # type: ignore[arg-type]
        try:
            return await fetcher.fetch(url)
        finally:
            await fetcher.aclose()
    return asyncio.run(run())


def test_an_allowed_url_is_fetched_and_redirects_followed(image_server: str) -> None:
    assert fetch(f"{image_server}/image.png") == PNG
    assert fetch(f"{image_server}/to-image") == PNG
    assert _Handler.accept_encodings_seen[-1] == "identity"


@pytest.mark.parametrize("path", ["/gzip", "/deflate"])
def test_one_layer_of_gzip_or_deflate_is_undone(image_server: str, path: str) -> None:
    assert fetch(f"{image_server}{path}") == PNG


def test_the_request_names_the_real_host_though_it_goes_to_the_checked_address(image_server: str) -> None:
    if socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)[0][4][0] != "127.0.0.1":
        pytest.skip("localhost does not resolve to 127.0.0.1 first here")
    port = image_server.rsplit(":", 1)[1]
    assert fetch(f"http://localhost:{port}/image.png") == PNG
    assert _Handler.hosts_seen[-1] == f"localhost:{port}"


def test_a_redirect_to_a_refused_address_is_refused(image_server: str) -> None:
    with pytest.raises(ImageError, match="127.0.0.2 is a loopback address"):
        fetch(f"{image_server}/to-private")


@pytest.mark.parametrize("path, limits, why", [
    ("/loop", {}, "redirects more than 3 times"),
    ("/missing", {}, "HTTP 404"),
    ("/huge", {"max_bytes": 1000}, "larger than 1000 bytes"),
    ("/image.png", {"max_bytes": 20}, "larger than 20 bytes"),  # refused from its Content-Length
    ("/slow", {"timeout_s": 0.5}, "took longer than 0.5 s|timed out"),
    ("/gzip-bomb", {"max_bytes": 100_000}, "larger than 100000 bytes"),  # decoded past the cap: stopped there
    ("/gzip-gzip", {}, "stacked content codings \\(gzip, gzip\\)"),
    ("/br", {}, "content coding `br`"),
])
def test_fetch_failures_say_what_went_wrong(image_server: str, path: str, limits: dict[str, float], why: str) -> None:
    with pytest.raises(ImageError, match=why):
        fetch(f"{image_server}{path}", **limits)


def test_the_default_policy_refuses_loopback_before_connecting(image_server: str) -> None:
    async def run() -> None:
        await SafeFetcher().fetch(f"{image_server}/image.png")
    with pytest.raises(ImageError, match="loopback"):
        asyncio.run(run())


# --- content codings, undone with a bound


@pytest.mark.parametrize("values, coding", [
    ([], ""), (["identity"], ""), (["gzip"], "gzip"), (["GZip "], "gzip"), (["x-gzip"], "x-gzip"),
    (["deflate"], "deflate"), (["identity, gzip"], "gzip"),
])
def test_the_content_coding_is_read_from_the_header(values: list[str], coding: str) -> None:
    assert content_coding(values) == coding


@pytest.mark.parametrize("values, why", [
    (["gzip, gzip"], "stacked"), (["gzip", "deflate"], "stacked"), (["br"], "`br`"), (["zstd"], "`zstd`"),
    (["compress"], "`compress`"),
])
def test_stacked_or_unknown_codings_are_refused(values: list[str], why: str) -> None:
    with pytest.raises(ImageError, match=why):
        content_coding(values)


def pieces_of(data: bytes, size: int) -> list[bytes]:
    return [data[start:start + size] for start in range(0, len(data), size)]


@pytest.mark.parametrize("coding, coded", [
    ("", PNG), ("gzip", gzip.compress(PNG)), ("deflate", zlib.compress(PNG)),
    ("deflate", zlib.compress(PNG, wbits=-zlib.MAX_WBITS)),  # raw deflate, as some servers send it
    ("gzip", gzip.compress(PNG[:100]) + gzip.compress(PNG[100:])),  # two gzip members
])
@pytest.mark.parametrize("piece_size", [1, 7, 1 << 16])
def test_any_split_of_the_coded_body_decodes_to_the_same_bytes(coding: str, coded: bytes, piece_size: int) -> None:
    decoder = BoundedDecoder(coding, max_bytes=len(PNG))
    assert b"".join(decoder.feed(piece) for piece in pieces_of(coded, piece_size)) + decoder.finish() == PNG


@pytest.mark.parametrize("coding, compress", [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_a_compressed_bomb_stops_at_the_limit_whole_or_in_pieces(coding: str, compress: object) -> None:
    bomb = compress(bytes(10 * 1024 * 1024))  # type: ignore[operator]
    for piece_size in (len(bomb), 512):
        decoder = BoundedDecoder(coding, max_bytes=100_000)
        with pytest.raises(ImageError, match="larger than 100000 bytes"):
            for piece in pieces_of(bomb, piece_size):
                assert len(decoder.feed(piece)) <= 100_000
        assert decoder.num_decoded_bytes <= 100_001  # never more than one byte past the limit was made


@pytest.mark.parametrize("coding, coded, why", [
    ("gzip", gzip.compress(PNG)[:-10], "ends too soon"),
    ("gzip", b"not gzip at all", "damaged"),
    ("deflate", zlib.compress(PNG) + b"more", "goes on after its end"),
])
def test_damaged_coded_bodies_are_refused(coding: str, coded: bytes, why: str) -> None:
    decoder = BoundedDecoder(coding, max_bytes=1 << 20)
    with pytest.raises(ImageError, match=why):
        decoder.feed(coded)
        decoder.finish()


# --- the loader: every failure an InvalidRequest naming the part


@pytest.mark.parametrize("source, why", [
    ("ftp://example.com/x.png", "scheme `ftp` is not supported"),
    ("file:///etc/passwd", "scheme `file` is not supported"),
    ("just some text", "expected an http\\(s\\) URL or a data URI"),
    ("data:image/png;base64," + base64.b64encode(b"not an image").decode(), "not an image"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://10.0.0.1/x.png", "private"),
])
def test_the_loader_names_the_part_in_its_errors(source: str, why: str) -> None:
    async def run() -> None:
        loader = ImageLoader(ImageLimits())
        try:
            await loader.load(source, param="messages.0.content.1.image_url")
        finally:
            await loader.aclose()
    with pytest.raises(InvalidRequest, match=f"^messages.0.content.1.image_url: .*({why})") as caught:
        asyncio.run(run())
    assert caught.value.param == "messages.0.content.1.image_url"


def test_more_images_than_the_limit_are_refused_naming_the_first_one_over() -> None:
    loader = ImageLoader(ImageLimits(max_per_request=2))
    sources = [(f"http://10.0.0.{index}/x.png", f"images.{index}") for index in range(4)]
    loader.check_count(sources[:2])
    with pytest.raises(InvalidRequest, match="^images.2: a request may carry 2 images at most") as caught:
        loader.check_count(sources)
    assert caught.value.param == "images.2"

    async def run() -> None:  # load_all checks first: nothing is fetched (these URLs would be refused otherwise)
        try:
            await loader.load_all(sources)
        finally:
            await loader.aclose()
    with pytest.raises(InvalidRequest, match="at most"):
        asyncio.run(run())


def test_images_decode_on_the_loaders_own_threads() -> None:
    seen_threads: list[str] = []

    async def run() -> None:
        loader = ImageLoader(ImageLimits(max_decodes_in_flight=1))
        try:
            uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
            images = await loader.load_all([(uri, "images.0"), (uri, "images.1")])
            assert [image.width for image in images] == [10, 10]
            seen_threads.extend(thread.name for thread in threading.enumerate())
        finally:
            await loader.aclose()
    asyncio.run(run())
    assert sum(name.startswith("image-decode") for name in seen_threads) == 1
