// Bundled by esbuild at test time: Uppy as a page would use it, pointed at our routes.
import Uppy from "@uppy/core";
import AwsS3 from "@uppy/aws-s3";

window.makeUppy = (endpoint) => {
  const uppy = new Uppy({ autoProceed: false });
  uppy.use(AwsS3, {
    companionEndpoint: endpoint,
    shouldUseMultipart: (file) => file.size > 5 * 1024 * 1024,
    getChunkSize: () => 5 * 1024 * 1024,
  });
  // Uppy never reports a POST upload to the server: complete (verify) it from here.
  uppy.on("upload-success", (file, response) => {
    if (file.size > 5 * 1024 * 1024) return;
    fetch(`${endpoint}/s3/complete?key=${encodeURIComponent(response.body.key)}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    }).then((r) => r.json()).then((body) => { window.completions.push(body); });
  });
  return uppy;
};
window.completions = [];
