// ThumbHash decoding (https://evanw.github.io/thumbhash/, MIT): a file's `preview` (base64)
// to a tiny RGBA picture, painted at once while the thumbnail loads. A port of the decoder
// of the Rust crate the server encodes with.

function aspectRatio(hash) {
  const hasAlpha = (hash[2] & 0x80) !== 0;
  const lMax = hasAlpha ? 5 : 7;
  const lMin = hash[3] & 7;
  const landscape = (hash[4] & 0x80) !== 0;
  return (landscape ? lMax : lMin) / (landscape ? lMin : lMax);
}

/** `{w, h, rgba}` of a ThumbHash given as bytes; throws on a short one. */
export function thumbHashToRGBA(hash) {
  if (hash.length < 5) throw new Error('ThumbHash too short');
  const ratio = aspectRatio(hash);
  let at = 0;
  const byte = () => {
    if (at >= hash.length) throw new Error('ThumbHash too short');
    return hash[at++];
  };
  const header24 = byte() | (byte() << 8) | (byte() << 16);
  const header16 = byte() | (byte() << 8);
  const lDc = (header24 & 63) / 63;
  const pDc = ((header24 >> 6) & 63) / 31.5 - 1;
  const qDc = ((header24 >> 12) & 63) / 31.5 - 1;
  const lScale = ((header24 >> 18) & 31) / 31;
  const hasAlpha = (header24 >> 23) !== 0;
  const pScale = ((header16 >> 3) & 63) / 63;
  const qScale = ((header16 >> 9) & 63) / 63;
  const landscape = (header16 >> 15) !== 0;
  const lMax = hasAlpha ? 5 : 7;
  const lx = Math.max(3, landscape ? lMax : header16 & 7);
  const ly = Math.max(3, landscape ? header16 & 7 : lMax);
  let aDc = 1;
  let aScale = 1;
  if (hasAlpha) {
    const header8 = byte();
    aDc = (header8 & 15) / 15;
    aScale = (header8 >> 4) / 15;
  }
  let pending = null;
  const channel = (nx, ny, scale) => {
    const ac = [];
    for (let cy = 0; cy < ny; cy++) {
      for (let cx = cy > 0 ? 0 : 1; cx * ny < nx * (ny - cy); cx++) {
        let bits;
        if (pending !== null) {
          bits = pending;
          pending = null;
        } else {
          const b = byte();
          pending = b >> 4;
          bits = b & 15;
        }
        ac.push((bits / 7.5 - 1) * scale);
      }
    }
    return ac;
  };
  const lAc = channel(lx, ly, lScale);
  const pAc = channel(3, 3, pScale * 1.25);
  const qAc = channel(3, 3, qScale * 1.25);
  const aAc = hasAlpha ? channel(5, 5, aScale) : [];

  const w = ratio > 1 ? 32 : Math.round(32 * ratio);
  const h = ratio > 1 ? Math.round(32 / ratio) : 32;
  const rgba = new Uint8ClampedArray(w * h * 4);
  const fx = new Array(7).fill(0);
  const fy = new Array(7).fill(0);
  for (let y = 0, i = 0; y < h; y++) {
    for (let x = 0; x < w; x++, i += 4) {
      let l = lDc;
      let p = pDc;
      let q = qDc;
      let a = aDc;
      for (let cx = 0, n = Math.max(lx, hasAlpha ? 5 : 3); cx < n; cx++) {
        fx[cx] = Math.cos((Math.PI / w) * (x + 0.5) * cx);
      }
      for (let cy = 0, n = Math.max(ly, hasAlpha ? 5 : 3); cy < n; cy++) {
        fy[cy] = Math.cos((Math.PI / h) * (y + 0.5) * cy);
      }
      for (let cy = 0, j = 0; cy < ly; cy++) {
        const fy2 = fy[cy] * 2;
        for (let cx = cy > 0 ? 0 : 1; cx * ly < lx * (ly - cy); cx++, j++) l += lAc[j] * fx[cx] * fy2;
      }
      for (let cy = 0, j = 0; cy < 3; cy++) {
        const fy2 = fy[cy] * 2;
        for (let cx = cy > 0 ? 0 : 1; cx < 3 - cy; cx++, j++) {
          const f = fx[cx] * fy2;
          p += pAc[j] * f;
          q += qAc[j] * f;
        }
      }
      if (hasAlpha) {
        for (let cy = 0, j = 0; cy < 5; cy++) {
          const fy2 = fy[cy] * 2;
          for (let cx = cy > 0 ? 0 : 1; cx < 5 - cy; cx++, j++) a += aAc[j] * fx[cx] * fy2;
        }
      }
      const b = l - (2 / 3) * p;
      const r = (3 * l - b + q) / 2;
      const g = r - q;
      rgba[i] = Math.max(0, Math.min(1, r)) * 255;
      rgba[i + 1] = Math.max(0, Math.min(1, g)) * 255;
      rgba[i + 2] = Math.max(0, Math.min(1, b)) * 255;
      rgba[i + 3] = Math.max(0, Math.min(1, a)) * 255;
    }
  }
  return { w, h, rgba };
}

/** A canvas painted with a base64 ThumbHash, or null when it cannot be read. */
export function thumbHashCanvas(base64) {
  try {
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const { w, h, rgba } = thumbHashToRGBA(bytes);
    const canvas = document.createElement('canvas');
    canvas.width = w;
    canvas.height = h;
    canvas.getContext('2d').putImageData(new ImageData(rgba, w, h), 0, 0);
    return canvas;
  } catch {
    return null;
  }
}
