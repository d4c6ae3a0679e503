/*
 * Partial JPEG decoding for digipath's TIFF backend.
 *
 * A random patch touches a handful of tiles but needs only part of each. libjpeg-turbo can
 * decode a region of a JPEG image: rows above it are skipped (entropy-decoded only, no
 * inverse DCT, upsampling or colour conversion), columns outside it are cropped (no inverse DCT
 * for the iMCU columns left out) and decoding stops after its last row. The pixels are the same
 * as those of a full decode: the crop is widened by one iMCU on each side (and libjpeg-turbo
 * aligns it to iMCU boundaries), so chroma upsampling sees the same neighbours.
 *
 * decode_region(data, tables, row, row_stop, col, col_stop, colorspace, out) -> (first_col, cols)
 *
 *   data        the JPEG stream of one tile (bytes-like)
 *   tables      an abbreviated stream with the quantisation and Huffman tables (TIFF tag
 *               JPEGTables), or None
 *   row ...     the region wanted, in pixels of the tile: [row, row_stop) x [col, col_stop)
 *   colorspace  0: as the stream says; 2: the stream holds RGB (Aperio SVS without JFIF marker)
 *   out         a writable C-contiguous buffer of (row_stop - row) rows of (tile width *
 *               components) bytes; on return, row r of the region holds decoded columns
 *               [first_col, first_col + cols), which include [col, col_stop) with the exact
 *               values of a full decode
 *
 * Output is RGB for colour streams and one channel for grayscale streams. Errors raise
 * ValueError with libjpeg's message; the GIL is released while decoding.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>

typedef struct {
    struct jpeg_error_mgr base;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
    int warnings;
} error_manager;

static void on_error(j_common_ptr cinfo)
{
    error_manager *errors = (error_manager *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, errors->message);
    longjmp(errors->jump, 1);
}

static void on_message(j_common_ptr cinfo, int level)
{
    error_manager *errors = (error_manager *)cinfo->err;
    /* Warnings (level < 0: recoverable corrupt data, such as extraneous bytes before a marker)
     * are counted and otherwise ignored, as a full decode by imagecodecs ignores them; trace
     * messages are dropped. Errors go through on_error. */
    if (level < 0) {
        errors->warnings++;
    }
}

static PyObject *decode_region(PyObject *self, PyObject *args)
{
    Py_buffer data = {0}, tables = {0}, out = {0};
    PyObject *tables_object = NULL;
    int row, row_stop, col, col_stop, colorspace;
    if (!PyArg_ParseTuple(args, "y*Oiiiiiw*", &data, &tables_object, &row, &row_stop, &col,
                          &col_stop, &colorspace, &out)) {
        return NULL;
    }
    int have_tables = tables_object != Py_None;
    if (have_tables && PyObject_GetBuffer(tables_object, &tables, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&data);
        PyBuffer_Release(&out);
        return NULL;
    }

    struct jpeg_decompress_struct cinfo;
    error_manager errors;
    memset(&cinfo, 0, sizeof(cinfo));
    memset(&errors, 0, sizeof(errors));
    cinfo.err = jpeg_std_error(&errors.base);
    errors.base.error_exit = on_error;
    errors.base.emit_message = on_message;

    const char *volatile failure = NULL;
    volatile JDIMENSION first_col = 0, cols = 0;
    volatile int created = 0;

    Py_BEGIN_ALLOW_THREADS
    if (setjmp(errors.jump)) {
        failure = errors.message;
    } else {
        jpeg_create_decompress(&cinfo);
        created = 1;
        if (have_tables && tables.len > 0) {
            jpeg_mem_src(&cinfo, (const unsigned char *)tables.buf, (unsigned long)tables.len);
            jpeg_read_header(&cinfo, FALSE);
        }
        jpeg_mem_src(&cinfo, (const unsigned char *)data.buf, (unsigned long)data.len);
        jpeg_read_header(&cinfo, TRUE);
        if (colorspace == 2 && cinfo.num_components == 3) {
            cinfo.jpeg_color_space = JCS_RGB;
        }
        if (cinfo.num_components == 1) {
            cinfo.out_color_space = JCS_GRAYSCALE;
        } else if (cinfo.num_components == 3) {
            cinfo.out_color_space = JCS_RGB;
        } else {
            failure = "only 1- and 3-component JPEG streams are decoded by region";
        }
        if (failure == NULL) {
            cinfo.dct_method = JDCT_ISLOW;
            jpeg_start_decompress(&cinfo);
            int width = (int)cinfo.output_width;
            int height = (int)cinfo.output_height;
            int components = cinfo.output_components;
            if (row < 0 || col < 0 || row >= row_stop || col >= col_stop || row_stop > height ||
                col_stop > width) {
                failure = "the region lies outside the JPEG image";
            } else if ((Py_ssize_t)(row_stop - row) * width * components > out.len) {
                failure = "the output buffer is too small";
            } else {
                /* Widen the crop by one iMCU on each side: fancy upsampling of the pixels at
                 * the crop's edges needs their neighbours, which a crop on an iMCU boundary
                 * leaves out. */
                int margin = cinfo.max_h_samp_factor * DCTSIZE;
                int start = col > margin ? col - margin : 0;
                int stop = col_stop + margin < width ? col_stop + margin : width;
                JDIMENSION crop_first = (JDIMENSION)start, crop_cols = (JDIMENSION)(stop - start);
                if (crop_first > 0 || crop_cols < (JDIMENSION)width) {
                    jpeg_crop_scanline(&cinfo, &crop_first, &crop_cols);
                }
                first_col = crop_first;
                cols = crop_cols;
                if (row > 0) {
                    jpeg_skip_scanlines(&cinfo, (JDIMENSION)row);
                }
                unsigned char *base = (unsigned char *)out.buf;
                size_t stride = (size_t)width * components;
                while ((int)cinfo.output_scanline < row_stop) {
                    JSAMPROW line = base + (size_t)(cinfo.output_scanline - row) * stride;
                    if (jpeg_read_scanlines(&cinfo, &line, 1) != 1) {
                        failure = "the JPEG stream ended early";
                        break;
                    }
                }
            }
        }
    }
    if (created) {
        jpeg_destroy_decompress(&cinfo);
    }
    Py_END_ALLOW_THREADS

    PyBuffer_Release(&data);
    PyBuffer_Release(&out);
    if (have_tables) {
        PyBuffer_Release(&tables);
    }
    if (failure != NULL) {
        PyErr_SetString(PyExc_ValueError, failure);
        return NULL;
    }
    return Py_BuildValue("(II)", (unsigned int)first_col, (unsigned int)cols);
}

static PyObject *library_version(PyObject *self, PyObject *unused)
{
#ifdef LIBJPEG_TURBO_VERSION
#define DIGIPATH_STRINGIFY2(x) #x
#define DIGIPATH_STRINGIFY(x) DIGIPATH_STRINGIFY2(x)
    return PyUnicode_FromString("libjpeg-turbo " DIGIPATH_STRINGIFY(LIBJPEG_TURBO_VERSION));
#else
    return PyUnicode_FromFormat("libjpeg %d", JPEG_LIB_VERSION);
#endif
}

static PyMethodDef methods[] = {
    {"decode_region", decode_region, METH_VARARGS,
     "decode_region(data, tables, row, row_stop, col, col_stop, colorspace, out)\n"
     "Decode rows [row, row_stop) and at least columns [col, col_stop) of a JPEG stream into\n"
     "out; return (first_col, cols), the decoded columns."},
    {"library_version", library_version, METH_NOARGS, "The libjpeg version compiled against."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_jpegregion",
    "Partial (region) JPEG decoding with libjpeg-turbo.", -1, methods,
};

PyMODINIT_FUNC PyInit__jpegregion(void)
{
    return PyModule_Create(&module);
}
