// The dashboard's 3D scan viewer, bundled with three.js into static/vendor/viewer.js
// (`make node`). The page holds a canvas `#scan-viewer` whose `data-src` is the packed
// scan (sync_server/dashboard/scans.py documents the format) and a `#scan-status`
// element for messages. The viewer draws the points in their captured colours (a
// neutral grey without colours) and the measured boundary as a closed line on top,
// fits the camera, and renders on demand: mouse (OrbitControls) and keyboard (arrow
// keys rotate, + and - zoom, 0 resets). Once the first frame is drawn the canvas gets
// data-state="drawn" and data-points, and performance.mark("scan-interactive") is set;
// on failure data-state="error" and the message is shown.
import * as THREE from "three";
import { OrbitControls } from "three/examples/jsm/controls/OrbitControls.js";

const MAGIC = "CHSC";
const HEADER_SIZE = 48;
const NEUTRAL = [0.78, 0.78, 0.74];
const BACKGROUND = 0x20242a;
const OUTLINE_COLOUR = 0xffd400;

/** The packed scan as typed arrays (throws on a wrong magic or version). */
export function parseScan(buffer) {
  const view = new DataView(buffer);
  const magic = String.fromCharCode(...new Uint8Array(buffer, 0, 4));
  if (buffer.byteLength < HEADER_SIZE || magic !== MAGIC) {
    throw new Error("the server sent something that is not a packed scan");
  }
  const version = view.getUint16(4, true);
  if (version !== 1) {
    throw new Error(`unknown scan format version ${version}`);
  }
  const hasColour = (view.getUint16(6, true) & 1) === 1;
  const count = view.getUint32(8, true);
  const stored = view.getUint32(12, true);
  const outlineCount = view.getUint32(16, true);
  const centre = [view.getFloat64(24, true), view.getFloat64(32, true), view.getFloat64(40, true)];
  let offset = HEADER_SIZE;
  const positions = new Float32Array(buffer, offset, count * 3);
  offset += count * 12;
  let colours = null;
  if (hasColour) {
    colours = new Uint8Array(buffer, offset, count * 3);
    offset += count * 3;
    offset += (4 - (offset % 4)) % 4;
  }
  const outline = new Float32Array(buffer, offset, outlineCount * 3);
  return { count, stored, hasColour, centre, positions, colours, outline };
}

function message(text) {
  const status = document.getElementById("scan-status");
  if (status) {
    status.textContent = text;
  }
}

async function errorText(response) {
  // The dashboard answers errors with an HTML page whose alert holds the message.
  try {
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const alert = page.querySelector("[role=alert]");
    if (alert && alert.textContent.trim()) {
      return alert.textContent.trim();
    }
  } catch (ignored) {
    // fall through to the status line
  }
  return `the server answered ${response.status}`;
}

function buildScene(scan) {
  const scene = new THREE.Scene();
  scene.background = new THREE.Color(BACKGROUND);
  const geometry = new THREE.BufferGeometry();
  geometry.setAttribute("position", new THREE.BufferAttribute(scan.positions, 3));
  if (scan.colours) {
    geometry.setAttribute("color", new THREE.BufferAttribute(scan.colours, 3, true));
  } else {
    const grey = new Float32Array(scan.count * 3);
    for (let i = 0; i < grey.length; i += 3) {
      grey[i] = NEUTRAL[0];
      grey[i + 1] = NEUTRAL[1];
      grey[i + 2] = NEUTRAL[2];
    }
    geometry.setAttribute("color", new THREE.BufferAttribute(grey, 3));
  }
  geometry.computeBoundingSphere();
  const radius = Math.max(geometry.boundingSphere ? geometry.boundingSphere.radius : 0, 0.005);
  const material = new THREE.PointsMaterial({
    size: radius / 150,
    sizeAttenuation: true,
    vertexColors: true,
  });
  scene.add(new THREE.Points(geometry, material));
  if (scan.outline.length >= 6) {
    const line = new THREE.BufferGeometry();
    line.setAttribute("position", new THREE.BufferAttribute(scan.outline, 3));
    const outline = new THREE.LineLoop(
      line,
      new THREE.LineBasicMaterial({ color: OUTLINE_COLOUR, depthTest: false }),
    );
    outline.renderOrder = 1; // drawn on top of the points
    scene.add(outline);
  }
  return { scene, radius, centre: geometry.boundingSphere.center.clone() };
}

async function start(canvas) {
  canvas.dataset.state = "loading";
  const response = await fetch(canvas.dataset.src, { credentials: "same-origin" });
  if (!response.ok) {
    throw new Error(await errorText(response));
  }
  const scan = parseScan(await response.arrayBuffer());
  if (scan.count === 0) {
    throw new Error("the scan holds no points");
  }
  const { scene, radius, centre } = buildScene(scan);
  const renderer = new THREE.WebGLRenderer({
    canvas,
    antialias: false,
    preserveDrawingBuffer: true,
  });
  renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
  const camera = new THREE.PerspectiveCamera(45, 1, radius / 100, radius * 100);
  const controls = new OrbitControls(camera, canvas);

  function fit() {
    const distance = radius / Math.sin(THREE.MathUtils.degToRad(camera.fov / 2));
    controls.target.copy(centre);
    camera.position.set(centre.x, centre.y, centre.z + distance * 1.1);
    camera.up.set(0, 1, 0);
    camera.lookAt(centre);
    controls.update();
  }

  function resize() {
    const width = canvas.clientWidth || 640;
    const height = canvas.clientHeight || 480;
    renderer.setSize(width, height, false);
    camera.aspect = width / height;
    camera.updateProjectionMatrix();
  }

  let pending = false;
  let first = true;
  function draw() {
    pending = false;
    renderer.render(scene, camera);
    if (first) {
      first = false;
      canvas.dataset.points = String(scan.count);
      canvas.dataset.state = "drawn";
      performance.mark("scan-interactive");
      const shown =
        scan.count === scan.stored
          ? `${scan.count.toLocaleString()} points`
          : `${scan.count.toLocaleString()} of ${scan.stored.toLocaleString()} points (decimated)`;
      const outline = scan.outline.length >= 6 ? `; the measured boundary (${scan.outline.length / 3} points) in yellow` : "; no measured boundary stored";
      message(`Showing ${shown}${outline}${scan.hasColour ? "" : "; the scan has no colours, drawn in grey"}.`);
    }
  }
  function requestDraw() {
    if (!pending) {
      pending = true;
      requestAnimationFrame(draw);
    }
  }

  function rotate(angleX, angleY) {
    const offset = camera.position.clone().sub(controls.target);
    const spherical = new THREE.Spherical().setFromVector3(offset);
    spherical.theta += angleX;
    spherical.phi = THREE.MathUtils.clamp(spherical.phi + angleY, 0.01, Math.PI - 0.01);
    offset.setFromSpherical(spherical);
    camera.position.copy(controls.target).add(offset);
    camera.lookAt(controls.target);
    controls.update();
  }
  function zoom(factor) {
    const offset = camera.position.clone().sub(controls.target).multiplyScalar(factor);
    camera.position.copy(controls.target).add(offset);
    controls.update();
  }

  const step = Math.PI / 24;
  canvas.addEventListener("keydown", (event) => {
    const actions = {
      ArrowLeft: () => rotate(-step, 0),
      ArrowRight: () => rotate(step, 0),
      ArrowUp: () => rotate(0, -step),
      ArrowDown: () => rotate(0, step),
      "+": () => zoom(0.85),
      "=": () => zoom(0.85),
      "-": () => zoom(1 / 0.85),
      _: () => zoom(1 / 0.85),
      0: fit,
    };
    const action = actions[event.key];
    if (action) {
      event.preventDefault();
      action();
      requestDraw();
    }
  });
  controls.addEventListener("change", requestDraw);
  new ResizeObserver(() => {
    resize();
    requestDraw();
  }).observe(canvas);

  resize();
  fit();
  draw();
}

function fail(canvas, error) {
  canvas.dataset.state = "error";
  message(`The scan cannot be shown: ${error && error.message ? error.message : error}`);
}

const canvas = document.getElementById("scan-viewer");
if (canvas) {
  start(canvas).catch((error) => fail(canvas, error));
}
