/* Region-of-interest JPEG decoding with libjpeg-turbo: only the rows and columns a centre crop needs.
 *
 * decode_region(data, denom, left, top, right, bottom, out) decodes `data` at 1/denom scale into the writable
 * buffer `out` and returns (left, top, width, height) of what it wrote: packed RGB rows of a region holding
 * [left, right) x [top, bottom) of the scaled image (libjpeg-turbo widens it to whole iMCU columns; `out` must
 * hold (bottom - top) rows of the scaled image's full width). Rows above and below the region are still
 * entropy-decoded (jpeg_skip_scanlines, then the image's last row read: skipping to the very end would not read
 * the rest of the file), so corrupt or truncated data is reported as a full decode reports it;
 * only their IDCT, upsampling and colour conversion are skipped, and the columns outside the region are never
 * reconstructed (jpeg_crop_scanline). Returns None for colour spaces libjpeg-turbo does not convert to RGB
 * (CMYK, YCCK). Raises ValueError with libjpeg's message on an error or on the first warning (corrupt data,
 * premature end), like simplejpeg's strict mode. The GIL is released while decoding.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    int failed;
    char message[JMSG_LENGTH_MAX];
} strict_error_mgr;

static void strict_error_exit(j_common_ptr cinfo) {
    strict_error_mgr *err = (strict_error_mgr *)cinfo->err;
    if (!err->failed) {
        (*cinfo->err->format_message)(cinfo, err->message);
        err->failed = 1;
    }
    longjmp(err->jump, 1);
}

static void strict_emit_message(j_common_ptr cinfo, int level) {
    if (level < 0) { /* a warning: corrupt data or a premature end; fatal in strict mode */
        strict_error_exit(cinfo);
    }
}

static void fail(strict_error_mgr *err, const char *message) {
    if (!err->failed) {
        snprintf(err->message, sizeof(err->message), "%s", message);
        err->failed = 1;
    }
    longjmp(err->jump, 1);
}

typedef struct {
    const unsigned char *data;
    size_t size;
    int denom;
    JDIMENSION left, top, right, bottom;
    unsigned char *pixels; /* the caller's buffer */
    size_t capacity;
    unsigned char *last_row; /* scratch for the image's last row (freed by decode) */
    /* results */
    JDIMENSION out_left, out_top, out_width, out_height;
    int unsupported;
    strict_error_mgr err;
} region_job;

static int in_range(JDIMENSION a, JDIMENSION b, JDIMENSION limit) {
    return a < b && b <= limit;
}

/* Runs without the GIL. Returns 0 on success, -1 on a libjpeg error (message in job->err), -2 on a bad region. */
static int decode(region_job *job) {
    struct jpeg_decompress_struct cinfo;
    volatile int created = 0;
    JSAMPROW row;
    JDIMENSION y, xoffset, width;

    cinfo.err = jpeg_std_error(&job->err.pub);
    job->err.pub.error_exit = strict_error_exit;
    job->err.pub.emit_message = strict_emit_message;
    job->err.failed = 0;
    job->last_row = NULL;
    if (setjmp(job->err.jump)) {
        if (created) {
            jpeg_destroy_decompress(&cinfo);
        }
        free(job->last_row);
        job->last_row = NULL;
        return -1;
    }
    jpeg_create_decompress(&cinfo);
    created = 1;
    jpeg_mem_src(&cinfo, job->data, (unsigned long)job->size);
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.jpeg_color_space != JCS_YCbCr && cinfo.jpeg_color_space != JCS_GRAYSCALE
        && cinfo.jpeg_color_space != JCS_RGB) {
        job->unsupported = 1;
        jpeg_destroy_decompress(&cinfo);
        return 0;
    }
    cinfo.out_color_space = JCS_RGB;
    cinfo.scale_num = 1;
    cinfo.scale_denom = (unsigned int)job->denom;
    cinfo.dct_method = JDCT_ISLOW;
    cinfo.do_fancy_upsampling = TRUE;
    jpeg_start_decompress(&cinfo);
    if (!in_range(job->left, job->right, cinfo.output_width) || !in_range(job->top, job->bottom, cinfo.output_height)) {
        jpeg_destroy_decompress(&cinfo);
        return -2;
    }
    xoffset = job->left;
    width = job->right - job->left;
    jpeg_crop_scanline(&cinfo, &xoffset, &width);
    if ((size_t)width * 3 * (job->bottom - job->top) > job->capacity) {
        fail(&job->err, "output buffer too small for the region");
    }
    if (job->top > 0 && jpeg_skip_scanlines(&cinfo, job->top) != job->top) {
        fail(&job->err, "cannot read the region's scanlines");
    }
    for (y = 0; y < job->bottom - job->top; y++) {
        row = job->pixels + (size_t)y * width * 3;
        if (jpeg_read_scanlines(&cinfo, &row, 1) != 1) {
            fail(&job->err, "cannot read the region's scanlines");
        }
    }
    if (cinfo.output_scanline < cinfo.output_height) {
        /* Skipping to the very end would mark the image complete without reading the rest of the file (a file
         * cut short below the region would pass); skip to the last row instead, which entropy-decodes every row
         * before it, and reconstruct that one row. */
        if (cinfo.output_height - cinfo.output_scanline > 1) {
            jpeg_skip_scanlines(&cinfo, cinfo.output_height - 1 - cinfo.output_scanline);
        }
        job->last_row = (unsigned char *)malloc((size_t)width * 3);
        if (job->last_row == NULL) {
            fail(&job->err, "out of memory");
        }
        row = job->last_row;
        if (jpeg_read_scanlines(&cinfo, &row, 1) != 1) {
            fail(&job->err, "cannot read the image's last scanline");
        }
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    free(job->last_row);
    job->last_row = NULL;
    job->out_left = xoffset;
    job->out_top = job->top;
    job->out_width = width;
    job->out_height = job->bottom - job->top;
    return 0;
}

static PyObject *decode_region(PyObject *self, PyObject *args) {
    Py_buffer view, out;
    region_job job;
    unsigned int left, top, right, bottom;
    int denom, status;

    memset(&job, 0, sizeof(job));
    if (!PyArg_ParseTuple(args, "y*iIIIIw*", &view, &denom, &left, &top, &right, &bottom, &out)) {
        return NULL;
    }
    if (denom != 1 && denom != 2 && denom != 4 && denom != 8) {
        PyBuffer_Release(&view);
        PyBuffer_Release(&out);
        PyErr_SetString(PyExc_ValueError, "denom must be 1, 2, 4 or 8");
        return NULL;
    }
    job.data = (const unsigned char *)view.buf;
    job.size = (size_t)view.len;
    job.denom = denom;
    job.left = left;
    job.top = top;
    job.right = right;
    job.bottom = bottom;
    job.pixels = (unsigned char *)out.buf;
    job.capacity = (size_t)out.len;
    Py_BEGIN_ALLOW_THREADS
    status = decode(&job);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    PyBuffer_Release(&out);
    if (status == -1) {
        PyErr_SetString(PyExc_ValueError, job.err.message);
        return NULL;
    }
    if (status == -2) {
        PyErr_SetString(PyExc_ValueError, "region outside the scaled image");
        return NULL;
    }
    if (job.unsupported) {
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(IIII)", job.out_left, job.out_top, job.out_width, job.out_height);
}

static PyMethodDef methods[] = {
    {"decode_region", decode_region, METH_VARARGS,
     "decode_region(data, denom, left, top, right, bottom, out) -> (left, top, width, height) or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_jpegregion", NULL, -1, methods};

PyMODINIT_FUNC PyInit__jpegregion(void) {
    return PyModule_Create(&module);
}
