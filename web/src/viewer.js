// The 3D scan viewer (bundled with three.js into static/vendor/viewer.js by `make install`).
// Placeholder until the viewer lands: it marks the canvas as drawn.
import * as THREE from "three";

export const version = THREE.REVISION;
