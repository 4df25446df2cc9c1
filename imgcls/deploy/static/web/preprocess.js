// How an image becomes the model's input, as imgcls computes it in Python (data/images.py, data/geometry.py):
// a large image reduced as it is read, then the evaluation geometry (centre crop, squash or pad) with Pillow's
// resampling, then the normalisation. Done here on pixel arrays, not with canvas: browsers resize with filters
// of their own, and the answers must be those of `imgcls predict`.
// An image is {width, height, data}: data holds RGB bytes, row by row.
"use strict";

const Preprocess = (() => {
  const PRECISION_BITS = 22;   // Pillow's fixed point for 8-bit resampling: 32 - 8 - 2
  const FILTERS = {
    bilinear: {support: 1, weight: (x) => { x = Math.abs(x); return x < 1 ? 1 - x : 0; }},
    bicubic: {support: 2, weight: (x) => {   // Keys' cubic with a = -0.5, as Pillow
      const a = -0.5;
      x = Math.abs(x);
      if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
      if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
      return 0;
    }},
  };

  // Python's round(): halves go to the even neighbour.
  function roundHalfEven(x) {
    const r = Math.round(x);
    return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
  }

  function image(width, height, data) {
    return {width, height, data: data || new Uint8Array(width * height * 3)};
  }

  // Pillow's Image.reduce: the mean of each factor x factor box (the last ones partial), rounded its way.
  function reduce(img, factor) {
    const out = image(Math.ceil(img.width / factor), Math.ceil(img.height / factor));
    for (let oy = 0; oy < out.height; oy++) {
      const y0 = oy * factor, y1 = Math.min(img.height, y0 + factor);
      for (let ox = 0; ox < out.width; ox++) {
        const x0 = ox * factor, x1 = Math.min(img.width, x0 + factor);
        const count = (y1 - y0) * (x1 - x0), multiplier = Math.floor(16777216 / count);
        for (let c = 0; c < 3; c++) {
          let sum = Math.floor(count / 2);
          for (let y = y0; y < y1; y++) {
            for (let x = x0; x < x1; x++) sum += img.data[(y * img.width + x) * 3 + c];
          }
          out.data[(oy * out.width + ox) * 3 + c] = Math.floor(sum * multiplier / 16777216);
        }
      }
    }
    return out;
  }

  // data/images.read_image: an image at least twice `side` on both sides is reduced as it is read, by a box
  // filter of the largest integer factor, as Pillow does. A JPEG that large Pillow first decodes at 1/2, 1/4 or 1/8
  // scale inside libjpeg (draft mode), which browsers cannot do: a box filter of the same factor stands in for it,
  // within a grey level of each pixel, which a sensitive network can still notice (docs/export.md).
  function reduceAsRead(img, side, jpeg) {
    if (jpeg) {
      const factor = Math.min(Math.floor(img.width / side), Math.floor(img.height / side));
      const draft = [8, 4, 2].find((s) => factor >= s);
      if (draft) img = reduce(img, draft);
    }
    const factor = Math.min(Math.floor(img.width / side), Math.floor(img.height / side));
    return factor >= 2 ? reduce(img, factor) : img;
  }

  // Pillow's precompute_coeffs: for each output pixel, the first input pixel and the fixed-point weights.
  function coefficients(inSize, outSize, filter) {
    const scale = inSize / outSize, filterScale = Math.max(scale, 1), inverse = 1 / filterScale;
    const support = filter.support * filterScale;
    const bounds = [], weights = [];
    for (let xx = 0; xx < outSize; xx++) {
      const center = (xx + 0.5) * scale;
      const xmin = Math.max(0, Math.trunc(center - support + 0.5));
      const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
      const k = [];
      let total = 0;
      for (let x = 0; x < xmax; x++) {
        const w = filter.weight((x + xmin - center + 0.5) * inverse);
        k.push(w);
        total += w;
      }
      weights.push(k.map((w) => {
        const v = (total !== 0 ? w / total : w) * (1 << PRECISION_BITS);
        return Math.trunc(v < 0 ? v - 0.5 : v + 0.5);
      }));
      bounds.push(xmin);
    }
    return {bounds, weights};
  }

  function clip8(sum) {
    const v = sum >> PRECISION_BITS;
    return v < 0 ? 0 : v > 255 ? 255 : v;
  }

  // One pass of Pillow's two-pass resampling, along x (horizontal) or y, to 8 bits.
  function resamplePass(img, outSize, filter, horizontal) {
    const {bounds, weights} = coefficients(horizontal ? img.width : img.height, outSize, filter);
    const out = horizontal ? image(outSize, img.height) : image(img.width, outSize);
    const step = horizontal ? 3 : img.width * 3;
    for (let y = 0; y < out.height; y++) {
      for (let x = 0; x < out.width; x++) {
        const i = horizontal ? x : y, k = weights[i];
        const base = horizontal ? (y * img.width + bounds[i]) * 3 : (bounds[i] * img.width + x) * 3;
        for (let c = 0; c < 3; c++) {
          let sum = 1 << (PRECISION_BITS - 1);
          for (let t = 0; t < k.length; t++) sum += img.data[base + t * step + c] * k[t];
          out.data[(y * out.width + x) * 3 + c] = clip8(sum);
        }
      }
    }
    return out;
  }

  // Pillow's nearest-neighbour resize (an affine scale): the source position steps by the scale from half a step
  // in, summed as Pillow sums it.
  function nearest(img, width, height) {
    const out = image(width, height);
    const sx = img.width / width, sy = img.height / height;
    const columns = [];
    for (let x = 0, xo = sx * 0.5; x < width; x++, xo += sx) columns.push(Math.trunc(xo));
    for (let y = 0, yo = sy * 0.5; y < height; y++, yo += sy) {
      const iy = Math.trunc(yo);
      if (iy >= img.height) continue;
      for (let x = 0; x < width; x++) {
        const from = (iy * img.width + columns[x]) * 3;
        if (columns[x] < img.width) out.data.set(img.data.subarray(from, from + 3), (y * width + x) * 3);
      }
    }
    return out;
  }

  // Image.resize((width, height), resample) of an RGB image, in two passes rounded to 8 bits in between. Pillow
  // runs the horizontal pass first; Pillow 13 and later run the vertical one first when the height shrinks by more
  // than twice as many pixels as the width (`how.heightFirst`: which Pillow the export was made with).
  function resize(img, width, height, how) {
    if (img.width === width && img.height === height) return img;
    if (how.interpolation === "nearest") return nearest(img, width, height);
    const filter = FILTERS[how.interpolation] || FILTERS.bilinear;   // geometry.resampling's default
    const shrink = img.height - height;
    if (how.heightFirst && shrink > 0 && shrink > (img.width - width) * 2) {
      img = resamplePass(img, height, filter, false);
      return img.width !== width ? resamplePass(img, width, filter, true) : img;
    }
    if (img.width !== width) img = resamplePass(img, width, filter, true);
    if (img.height !== height) img = resamplePass(img, height, filter, false);
    return img;
  }

  // geometry.Resize with an int: the short side to `size`, the long side in proportion (truncated).
  function resizeShortSide(img, size, how) {
    const short = Math.min(img.width, img.height), long = Math.max(img.width, img.height);
    const newLong = Math.trunc(size * long / short);
    return img.width <= img.height ? resize(img, size, newLong, how)
                                   : resize(img, newLong, size, how);
  }

  // ImageOps.expand: a border of `fill` ([r, g, b]) around the image.
  function expand(img, left, top, right, bottom, fill) {
    const out = image(img.width + left + right, img.height + top + bottom);
    for (let i = 0; i < out.width * out.height; i++) out.data.set(fill, i * 3);
    for (let y = 0; y < img.height; y++) {
      out.data.set(img.data.subarray(y * img.width * 3, (y + 1) * img.width * 3), ((y + top) * out.width + left) * 3);
    }
    return out;
  }

  function crop(img, left, top, width, height) {
    const out = image(width, height);
    for (let y = 0; y < height; y++) {
      const start = ((y + top) * img.width + left) * 3;
      out.data.set(img.data.subarray(start, start + width * 3), y * width * 3);
    }
    return out;
  }

  // geometry.CenterCrop: the centre (height, width), zero-padded first where the image is smaller.
  function centerCrop(img, height, width) {
    if (width > img.width || height > img.height) {
      const left = Math.max(0, Math.floor((width - img.width) / 2));
      const top = Math.max(0, Math.floor((height - img.height) / 2));
      const right = Math.max(0, Math.floor((width - img.width + 1) / 2));
      const bottom = Math.max(0, Math.floor((height - img.height + 1) / 2));
      img = expand(img, left, top, right, bottom, [0, 0, 0]);
      if (img.width === width && img.height === height) return img;
    }
    const top = roundHalfEven((img.height - height) / 2), left = roundHalfEven((img.width - width) / 2);
    return crop(img, left, top, width, height);
  }

  // geometry.Letterbox: the whole image inside (height, width), the rest filled with the mean colour.
  function letterbox(img, height, width, preprocess, how) {
    const scale = Math.min(height / img.height, width / img.width);
    const newH = Math.max(1, roundHalfEven(img.height * scale)), newW = Math.max(1, roundHalfEven(img.width * scale));
    img = resize(img, newW, newH, how);
    const left = Math.floor((width - newW) / 2), top = Math.floor((height - newH) / 2);
    const fill = preprocess.mean.map((m) => roundHalfEven(m * 255));
    return expand(img, left, top, width - newW - left, height - newH - top, fill);
  }

  // geometry.Cover: resized to cover (height, width) keeping the aspect ratio, then its centre.
  function cover(img, height, width, how) {
    const scale = Math.max(height / img.height, width / img.width);
    const newH = Math.max(height, roundHalfEven(img.height * scale));
    const newW = Math.max(width, roundHalfEven(img.width * scale));
    return centerCrop(resize(img, newW, newH, how), height, width);
  }

  function resizeMode(preprocess) {
    return preprocess.resize || "crop";
  }

  // geometry.working_size: (height, width) images are resized to before the centre crop.
  function workingSize(preprocess) {
    const [, height, width] = preprocess.input_size;
    return [Math.floor(height / preprocess.crop_pct), Math.floor(width / preprocess.crop_pct)];
  }

  // geometry.working_side: the side a decoded image keeps at least.
  function workingSide(preprocess) {
    const [height, width] = workingSize(preprocess);
    return resizeMode(preprocess) !== "crop" ? Math.max(height, width) : Math.min(height, width);
  }

  // geometry.eval_geometry: any image to exactly the input size. `pillow` says how the Pillow that imgcls ran
  // with orders its resampling passes ({heightFirst}).
  function evalGeometry(img, preprocess, pillow) {
    const [, height, width] = preprocess.input_size;
    const mode = resizeMode(preprocess), how = {interpolation: preprocess.interpolation, ...pillow};
    if (mode === "pad") return letterbox(img, height, width, preprocess, how);
    if (mode !== "crop") return resize(img, width, height, how);
    const [workH, workW] = workingSize(preprocess);
    if (height !== width) return centerCrop(cover(img, workH, workW, how), height, width);
    return centerCrop(resizeShortSide(img, workH, how), height, width);
  }

  // geometry.Normalize: float32 C x H x W, scaled to 0..1, less the mean, over the standard deviation, each step
  // rounded to float32 as numpy does.
  function normalize(img, preprocess) {
    const plane = img.width * img.height, out = new Float32Array(3 * plane);
    for (let c = 0; c < 3; c++) {
      const mean = Math.fround(preprocess.mean[c]), std = Math.fround(preprocess.std[c]);
      for (let i = 0; i < plane; i++) {
        out[c * plane + i] = Math.fround(Math.fround(img.data[i * 3 + c] / 255) - mean) / std;
      }
    }
    return out;
  }

  // The model's input for a decoded image: what imgcls predict feeds the network for the same file.
  function modelInput(img, preprocess, pillow, jpeg) {
    const reduced = reduceAsRead(img, workingSide(preprocess), jpeg);
    return normalize(evalGeometry(reduced, preprocess, pillow), preprocess);
  }

  return {image, reduce, reduceAsRead, resize, evalGeometry, normalize, modelInput, workingSide, roundHalfEven};
})();
