// Runs an ONNX export of LLaVA-Qwen3 in this page with transformers.js. Everything comes from this page's own
// folder (written by llava-qwen3-browser-demo): the library and onnxruntime-web's WASM files in vendor/, the model in
// model/, the prompt and image settings in demo.json. Nothing is fetched from anywhere else.
//
// What the page exposes for scripts and tests: window.llavaDemo = {ready, error, device, dtype, threads, settings,
// last}, where last = {question, input_ids, pixel_values (a Tensor or null), sequence, tokens, text, seconds}; the
// answer element's data-tokens attribute holds the last answer's token ids.
import * as transformers from './vendor/transformers.min.js';
import { centreCrop, pilResize, resizedSize } from './pil_resize.js';

const { AutoModelForImageTextToText, AutoTokenizer, ImageProcessor, RawImage, TextStreamer, env } = transformers;
const here = new URL('./', import.meta.url);
const element = (id) => document.getElementById(id);
const state = (window.llavaDemo = { ready: false, error: null, last: null });
let picked = null; // the picked image file, or null: ask about text alone

function setStatus(text, isError = false) {
    element('status').textContent = text;
    element('status').className = isError ? 'error' : '';
}

function fail(error) {
    state.error = String(error?.message ?? error);
    setStatus(state.error, true);
    console.error(error);
}

// WebGPU where the browser gives an adapter, else WASM; ?device=wasm or ?device=webgpu chooses.
async function chooseDevice() {
    const asked = new URLSearchParams(location.search).get('device');
    if (asked) return asked;
    try {
        if (navigator.gpu && (await navigator.gpu.requestAdapter())) return 'webgpu';
    } catch {
        // no usable adapter: WASM
    }
    return 'wasm';
}

function configureLibrary() {
    env.allowRemoteModels = false; // never the Hub: the model is in this folder
    env.allowLocalModels = true;
    env.localModelPath = here.pathname; // a path, not a URL: transformers.js takes URLs for remote files
    env.useBrowserCache = false; // the HTTP cache serves repeat visits; a rewritten folder is never shadowed
    const wasm = env.backends.onnx.wasm;
    wasm.wasmPaths = new URL('vendor/', here).href; // not the CDN transformers.js defaults to
    // Threads need SharedArrayBuffer, which browsers give only to cross-origin isolated pages (COOP + COEP headers,
    // as llava-qwen3-serve --browser-demo sends them); elsewhere one thread.
    wasm.numThreads = self.crossOriginIsolated ? Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1)) : 1;
    return wasm.numThreads;
}

function imageProcessorFor(config) {
    const name = (config.image_processor_type || '').replace(/(Fast|Pil)$/, '');
    const Class = transformers[name] && transformers[name].prototype instanceof ImageProcessor ? transformers[name] : ImageProcessor;
    return new Class(config);
}

// The picture's pixel values as the Python processor makes them: resized and cropped here with Pillow's arithmetic
// (pil_resize.js), then rescaled and normalised by transformers.js' image processor. A size rule or filter that
// pil_resize.js does not cover is left to transformers.js, which resizes with the browser's canvas.
async function picturePixels(file) {
    const config = state.settings.image_processor;
    const image = (await RawImage.fromBlob(file)).rgb();
    let [pixels, width, height] = [image.data, image.width, image.height];
    if (config.do_resize) {
        const size = resizedSize(config.size, width, height);
        const resized = size && pilResize(pixels, width, height, 3, size[0], size[1], config.resample ?? 2);
        if (!resized) return (await state.imageProcessor(image)).pixel_values;
        [pixels, width, height] = [resized, ...size];
    }
    if (config.do_center_crop) {
        const crop = config.crop_size;
        const [cropWidth, cropHeight] = typeof crop === 'number' ? [crop, crop] : [crop.width, crop.height];
        const cropped = centreCrop(pixels, width, height, 3, cropWidth, cropHeight);
        if (!cropped) return (await state.imageProcessor(image)).pixel_values;
        [pixels, width, height] = [cropped, cropWidth, cropHeight];
    }
    return (await state.normaliser(new RawImage(pixels, width, height, 3))).pixel_values;
}

function showProgress(event) {
    if (event.status === 'progress' && event.total) {
        element('progress').value = event.loaded / event.total;
        setStatus(`Loading ${event.file}: ${Math.round((100 * event.loaded) / event.total)}%`);
    }
}

async function load() {
    const settings = await (await fetch(new URL('demo.json', here))).json();
    state.settings = settings;
    state.threads = configureLibrary();
    state.device = await chooseDevice();
    state.dtype = settings.dtype;
    element('title').textContent = settings.title;
    element('max-tokens').value = settings.max_new_tokens;
    element('engine').textContent =
        `${settings.dtype} graphs on ${state.device}` + (state.device === 'wasm' ? ` (${state.threads} thread${state.threads === 1 ? '' : 's'})` : '') +
        `; transformers.js ${transformers.env.version}`;
    const config = await (await fetch(new URL(`${settings.model}/config.json`, here))).json();
    const started = performance.now();
    state.tokenizer = await AutoTokenizer.from_pretrained(settings.model);
    // transformers.js knows this architecture as Llava (CLIP/SigLIP tower, projector, decoder): the same three graphs.
    state.model = await AutoModelForImageTextToText.from_pretrained(settings.model, {
        config: { ...config, model_type: 'llava' },
        dtype: settings.dtype,
        device: state.device,
        progress_callback: showProgress,
    });
    state.imageProcessor = imageProcessorFor(settings.image_processor);
    state.normaliser = imageProcessorFor({ ...settings.image_processor, do_resize: false, do_center_crop: false });
    state.loadSeconds = (performance.now() - started) / 1000;
    element('progress').value = 1;
    element('ask').disabled = false;
    element('ask').textContent = 'Ask';
    setStatus(`Model loaded in ${state.loadSeconds.toFixed(1)} s.`);
    state.ready = true;
}

function pick(file) {
    if (!file || !file.type.startsWith('image/')) {
        setStatus('That is not an image file.', true);
        return;
    }
    picked = file;
    element('preview').src = URL.createObjectURL(file);
    element('preview').style.display = 'block';
    element('drop-text').textContent = file.name;
    setStatus('Image ready.');
}

async function ask(question, maxNewTokens) {
    const { settings, tokenizer, model } = state;
    if (question.includes(settings.image_token)) throw new Error(`The question cannot hold ${settings.image_token}.`);
    const [before, after] = picked ? settings.prompt.image : settings.prompt.text;
    const inputs = tokenizer(before + question + after, { add_special_tokens: false });
    let pixelValues = null;
    if (picked) {
        pixelValues = await picturePixels(picked);
        inputs.pixel_values = pixelValues;
    }
    const answer = element('answer');
    answer.textContent = '';
    delete answer.dataset.tokens;
    const streamer = new TextStreamer(tokenizer, {
        skip_prompt: true,
        skip_special_tokens: true,
        callback_function: (text) => (answer.textContent += text),
    });
    const started = performance.now();
    const output = await model.generate({ ...inputs, max_new_tokens: maxNewTokens, do_sample: false, streamer });
    const seconds = (performance.now() - started) / 1000;
    const sequence = output.tolist()[0].map(Number);
    const promptIds = inputs.input_ids.tolist()[0].map(Number);
    const tokens = sequence.slice(promptIds.length);
    const text = tokenizer.decode(tokens, { skip_special_tokens: true });
    answer.textContent = text;
    answer.dataset.tokens = JSON.stringify(tokens);
    state.last = { question, input_ids: promptIds, pixel_values: pixelValues, sequence, tokens, text, seconds };
    setStatus(`Finished: ${tokens.length} tokens in ${seconds.toFixed(2)} s (${(tokens.length / seconds).toFixed(1)} tokens/s).`);
}

const drop = element('drop');
drop.addEventListener('click', () => element('file').click());
element('file').addEventListener('change', () => pick(element('file').files[0]));
drop.addEventListener('dragover', (event) => {
    event.preventDefault();
    drop.classList.add('over');
});
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (event) => {
    event.preventDefault();
    drop.classList.remove('over');
    pick(event.dataTransfer.files[0]);
});
element('ask-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const question = element('question').value.trim();
    const maxNewTokens = Number.parseInt(element('max-tokens').value, 10);
    if (!question) return setStatus('Write a question first.', true);
    if (!(maxNewTokens >= 1)) return setStatus('The longest answer must be at least 1 token.', true);
    element('ask').disabled = true;
    state.error = null; // an earlier question's
    setStatus('Thinking...');
    try {
        await ask(question, maxNewTokens);
    } catch (error) {
        fail(error);
    } finally {
        element('ask').disabled = false;
    }
});

load().catch(fail);
