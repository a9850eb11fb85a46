// Greedy generation with transformers.js in Node from an ONNX export of LLaVA-Qwen3.
// Usage: node generate.mjs EXPORT_FOLDER CASES_JSON; prints one JSON object per case on stdout.
// A case holds the prompt text, the input ids and pixel values Python's processor made for it, the dtype
// (transformers.js' variant name) and max_new_tokens.
import fs from 'node:fs';
import { AutoModelForImageTextToText, AutoTokenizer, Tensor, env } from '@huggingface/transformers';

env.allowRemoteModels = false; // never reach the network: the export folder is all there is

const [folder, casesPath] = process.argv.slice(2);
const cases = JSON.parse(fs.readFileSync(casesPath, 'utf8'));
const config = JSON.parse(fs.readFileSync(`${folder}/config.json`, 'utf8'));
const tokenizer = await AutoTokenizer.from_pretrained(folder, { local_files_only: true });
const models = {};

const int64 = (rows) => new Tensor('int64', BigInt64Array.from(rows.flat().map(BigInt)), [rows.length, rows[0].length]);

for (const item of cases) {
    // transformers.js knows this architecture as Llava (CLIP/SigLIP tower, projector, decoder): the same graphs.
    models[item.dtype] ??= await AutoModelForImageTextToText.from_pretrained(folder, {
        config: { ...config, model_type: 'llava' },
        dtype: item.dtype,
        local_files_only: true,
    });
    tokenizer.padding_side = 'left'; // as the Python processor pads for generation
    const encoded = tokenizer(item.texts, { padding: true, add_special_tokens: false });
    const inputs = { input_ids: int64(item.input_ids), attention_mask: int64(item.attention_mask) };
    if (item.pixel_values) {
        inputs.pixel_values = new Tensor('float32', Float32Array.from(item.pixel_values.flat(Infinity)), item.pixel_shape);
    }
    const output = await models[item.dtype].generate({ ...inputs, max_new_tokens: item.max_new_tokens, do_sample: false });
    console.log(JSON.stringify({
        tokenized: encoded.input_ids.tolist().map((row) => row.map(Number)),
        sequences: output.tolist().map((row) => row.map(Number)),
    }));
}
