/**
 * ONNX export of the MLP (opset 13): features [N, D] → Gemm → Relu → Gemm →
 * Relu → Gemm → Sigmoid → p [N, 1]. The ModelProto is built with protobufjs
 * from the subset of onnx.proto it needs (field numbers as in the official
 * schema); the same schema reads the weights back, so a model file is the
 * single source of its weights.
 */
import protobuf from 'protobufjs';
import type { MlpWeights } from './mlp.js';

const FLOAT = 1; // TensorProto.DataType.FLOAT

const root = protobuf.Root.fromJSON({
  nested: {
    onnx: {
      nested: {
        ModelProto: {
          fields: {
            ir_version: { type: 'int64', id: 1 },
            producer_name: { type: 'string', id: 2 },
            producer_version: { type: 'string', id: 3 },
            domain: { type: 'string', id: 4 },
            model_version: { type: 'int64', id: 5 },
            doc_string: { type: 'string', id: 6 },
            graph: { type: 'GraphProto', id: 7 },
            opset_import: { rule: 'repeated', type: 'OperatorSetIdProto', id: 8 },
          },
        },
        OperatorSetIdProto: { fields: { domain: { type: 'string', id: 1 }, version: { type: 'int64', id: 2 } } },
        GraphProto: {
          fields: {
            node: { rule: 'repeated', type: 'NodeProto', id: 1 },
            name: { type: 'string', id: 2 },
            initializer: { rule: 'repeated', type: 'TensorProto', id: 5 },
            doc_string: { type: 'string', id: 10 },
            input: { rule: 'repeated', type: 'ValueInfoProto', id: 11 },
            output: { rule: 'repeated', type: 'ValueInfoProto', id: 12 },
          },
        },
        NodeProto: {
          fields: {
            input: { rule: 'repeated', type: 'string', id: 1 },
            output: { rule: 'repeated', type: 'string', id: 2 },
            name: { type: 'string', id: 3 },
            op_type: { type: 'string', id: 4 },
            attribute: { rule: 'repeated', type: 'AttributeProto', id: 5 },
            domain: { type: 'string', id: 7 },
          },
        },
        AttributeProto: {
          fields: { name: { type: 'string', id: 1 }, f: { type: 'float', id: 2 }, i: { type: 'int64', id: 3 }, type: { type: 'int32', id: 20 } },
        },
        TensorProto: {
          fields: {
            dims: { rule: 'repeated', type: 'int64', id: 1 },
            data_type: { type: 'int32', id: 2 },
            name: { type: 'string', id: 8 },
            raw_data: { type: 'bytes', id: 9 },
          },
        },
        ValueInfoProto: { fields: { name: { type: 'string', id: 1 }, type: { type: 'TypeProto', id: 2 } } },
        TypeProto: {
          fields: { tensor_type: { type: 'Tensor', id: 1 } },
          nested: { Tensor: { fields: { elem_type: { type: 'int32', id: 1 }, shape: { type: 'TensorShapeProto', id: 2 } } } },
        },
        TensorShapeProto: {
          fields: { dim: { rule: 'repeated', type: 'Dimension', id: 1 } },
          nested: { Dimension: { oneofs: { value: { oneof: ['dim_value', 'dim_param'] } }, fields: { dim_value: { type: 'int64', id: 1 }, dim_param: { type: 'string', id: 2 } } } },
        },
      },
    },
  },
});

const ModelProto = root.lookupType('onnx.ModelProto');

function tensor(name: string, dims: number[], data: Float32Array): Record<string, unknown> {
  return { name, dims, data_type: FLOAT, raw_data: new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength)) };
}

function valueInfo(name: string, dims: Array<number | string>): Record<string, unknown> {
  return {
    name,
    type: { tensor_type: { elem_type: FLOAT, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dim_value: d } : { dim_param: d })) } } },
  };
}

export function exportOnnx(m: MlpWeights, doc: string): Uint8Array {
  const [d, h1, h2] = m.dims;
  const gemm = (a: string, w: string, b: string, out: string) => ({ op_type: 'Gemm', input: [a, w, b], output: [out], name: `gemm_${out}` });
  const model = {
    ir_version: 8,
    producer_name: 'prompt-engine',
    producer_version: '1',
    doc_string: doc,
    opset_import: [{ domain: '', version: 13 }],
    graph: {
      name: 'success_mlp',
      node: [
        gemm('features', 'w1', 'b1', 'z1'),
        { op_type: 'Relu', input: ['z1'], output: ['a1'], name: 'relu1' },
        gemm('a1', 'w2', 'b2', 'z2'),
        { op_type: 'Relu', input: ['z2'], output: ['a2'], name: 'relu2' },
        gemm('a2', 'w3', 'b3', 'z3'),
        { op_type: 'Sigmoid', input: ['z3'], output: ['p'], name: 'sigmoid' },
      ],
      initializer: [tensor('w1', [d, h1], m.w1), tensor('b1', [h1], m.b1), tensor('w2', [h1, h2], m.w2), tensor('b2', [h2], m.b2), tensor('w3', [h2, 1], m.w3), tensor('b3', [1], m.b3)],
      input: [valueInfo('features', ['N', d])],
      output: [valueInfo('p', ['N', 1])],
    },
  };
  const err = ModelProto.verify(model);
  if (err) throw new Error(`ONNX model does not verify: ${err}`);
  return ModelProto.encode(ModelProto.fromObject(model)).finish();
}

/** Read the MLP weights back from a model file written by `exportOnnx`. */
export function readOnnxWeights(buf: Uint8Array): MlpWeights {
  const model = ModelProto.toObject(ModelProto.decode(buf), { longs: Number, bytes: Array }) as {
    graph: { initializer: Array<{ name: string; dims: number[]; raw_data: number[] }> };
  };
  const get = (name: string): { dims: number[]; data: Float32Array } => {
    const t = model.graph.initializer.find((x) => x.name === name);
    if (t === undefined) throw new Error(`model file has no initializer ${name}`);
    const bytes = Uint8Array.from(t.raw_data);
    return { dims: t.dims, data: new Float32Array(bytes.buffer, 0, bytes.byteLength / 4) };
  };
  const w1 = get('w1');
  const w2 = get('w2');
  return { dims: [w1.dims[0]!, w1.dims[1]!, w2.dims[1]!], w1: w1.data, b1: get('b1').data, w2: w2.data, b2: get('b2').data, w3: get('w3').data, b3: get('b3').data };
}
