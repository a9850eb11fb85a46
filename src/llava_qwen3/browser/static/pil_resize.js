// The picture's geometry as the Python processor makes it (transformers' PIL image processors): a resize with
// Pillow's own resampling arithmetic (Resample.c: the filter's weights normalised and turned into 22-bit fixed point,
// a horizontal pass then a vertical one, each rounded and clipped to 8 bits), then an integer centre crop. The
// browser's canvas resizes with its own smoothing and crops at half pixels, which would give other pixel values.
const PRECISION_BITS = 22; // 32 - 8 - 2, as Pillow uses for 8-bit images

function sinc(x) {
    if (x === 0) return 1;
    const angle = x * Math.PI;
    return Math.sin(angle) / angle;
}

// Pillow's filters by its resample number: [support, filter].
const FILTERS = {
    1: [3, (x) => (x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0)], // LANCZOS
    2: [1, (x) => Math.max(0, 1 - Math.abs(x))], // BILINEAR
    3: [
        2,
        (x) => {
            // BICUBIC, a = -0.5
            const a = -0.5;
            x = Math.abs(x);
            if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
            if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
            return 0;
        },
    ],
    4: [0.5, (x) => (x > -0.5 && x <= 0.5 ? 1 : 0)], // BOX
    5: [
        1,
        (x) => {
            // HAMMING
            x = Math.abs(x);
            if (x === 0) return 1;
            if (x >= 1) return 0;
            const angle = x * Math.PI;
            return (Math.sin(angle) / angle) * (0.54 + 0.46 * Math.cos(angle));
        },
    ],
};

function coefficients(inSize, outSize, [support, filter]) {
    const scale = inSize / outSize;
    const filterScale = Math.max(scale, 1);
    const reach = support * filterScale;
    const kernelSize = Math.ceil(reach) * 2 + 1;
    const inverse = 1 / filterScale;
    const bounds = new Int32Array(outSize * 2);
    const weights = new Float64Array(outSize * kernelSize);
    for (let xx = 0; xx < outSize; xx++) {
        const center = (xx + 0.5) * scale;
        const first = Math.max(0, Math.trunc(center - reach + 0.5));
        const count = Math.min(inSize, Math.trunc(center + reach + 0.5)) - first;
        const row = new Float64Array(count);
        let total = 0;
        for (let x = 0; x < count; x++) {
            row[x] = filter((x + first - center + 0.5) * inverse);
            total += row[x];
        }
        for (let x = 0; x < count; x++) {
            const weight = total !== 0 ? row[x] / total : row[x];
            const fixed = weight * (1 << PRECISION_BITS);
            weights[xx * kernelSize + x] = weight < 0 ? Math.trunc(-0.5 + fixed) : Math.trunc(0.5 + fixed);
        }
        bounds[2 * xx] = first;
        bounds[2 * xx + 1] = count;
    }
    return { bounds, weights, kernelSize };
}

function clip8(sum) {
    return Math.min(255, Math.max(0, Math.floor(sum / 2 ** PRECISION_BITS)));
}

// One pass over HWC 8-bit pixels with `channels` channels, along x (horizontal) or y.
function pass(pixels, width, height, channels, outSize, filter, horizontal) {
    const { bounds, weights, kernelSize } = coefficients(horizontal ? width : height, outSize, filter);
    const outWidth = horizontal ? outSize : width;
    const outHeight = horizontal ? height : outSize;
    const out = new Uint8ClampedArray(outWidth * outHeight * channels);
    for (let y = 0; y < outHeight; y++) {
        for (let x = 0; x < outWidth; x++) {
            const index = horizontal ? x : y;
            const first = bounds[2 * index];
            const count = bounds[2 * index + 1];
            for (let c = 0; c < channels; c++) {
                let sum = 1 << (PRECISION_BITS - 1);
                for (let k = 0; k < count; k++) {
                    const source = horizontal ? y * width + first + k : (first + k) * width + x;
                    sum += pixels[source * channels + c] * weights[index * kernelSize + k];
                }
                out[(y * outWidth + x) * channels + c] = clip8(sum);
            }
        }
    }
    return out;
}

// Pillow's Image.resize((width, height), resample) of HWC 8-bit pixels; null for a filter it does not cover here.
export function pilResize(pixels, width, height, channels, outWidth, outHeight, resample) {
    const filter = FILTERS[resample];
    if (!filter) return null;
    if (outWidth !== width) {
        pixels = pass(pixels, width, height, channels, outWidth, filter, true);
        width = outWidth;
    }
    if (outHeight !== height) pixels = pass(pixels, width, height, channels, outHeight, filter, false);
    return pixels;
}

// The size transformers' PIL backend resizes to: {shortest_edge} keeps the aspect ratio (the long side truncated),
// {height, width} is exact; null for other size rules.
export function resizedSize(size, width, height) {
    if (typeof size === 'number') size = { shortest_edge: size };
    if (size.shortest_edge && !size.longest_edge) {
        const [short, long] = width <= height ? [width, height] : [height, width];
        const newLong = Math.trunc((size.shortest_edge * long) / short);
        return width <= height ? [size.shortest_edge, newLong] : [newLong, size.shortest_edge];
    }
    if (size.height && size.width) return [size.width, size.height];
    return null;
}

// The centre `cropWidth` x `cropHeight` of HWC pixels, offsets rounded down (transformers' center_crop); null where
// the crop is larger than the picture (transformers pads then).
export function centreCrop(pixels, width, height, channels, cropWidth, cropHeight) {
    if (cropWidth > width || cropHeight > height) return null;
    const top = Math.floor((height - cropHeight) / 2);
    const left = Math.floor((width - cropWidth) / 2);
    const out = new Uint8ClampedArray(cropWidth * cropHeight * channels);
    for (let y = 0; y < cropHeight; y++) {
        const start = ((top + y) * width + left) * channels;
        out.set(pixels.subarray(start, start + cropWidth * channels), y * cropWidth * channels);
    }
    return out;
}
