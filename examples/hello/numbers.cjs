// CommonJS works too, and files can require their libraries.
const { mean, max } = require("./lib/stats");

exports.summary = function summary(values) {
  if (!Array.isArray(values) || values.length === 0) throw new TypeError("values must be a non-empty array");
  return { count: values.length, mean: mean(values), max: max(values) };
};

exports.add = (a, b) => a + b;
